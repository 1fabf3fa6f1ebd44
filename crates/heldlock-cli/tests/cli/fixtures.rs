//! What the tests of several subcommands set up: a live holder, a lock in
//! the reference's format, and looks at the lock's directory.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, SystemTime};

use rustix::process::Signal;

use crate::common::*;

/// A background `heldlock run <lock> -- sleep 30` holding the lock until
/// dropped (then SIGTERM, which heldlock forwards, and the lock is released).
pub(crate) struct Holder {
    child: Child,
}

impl Holder {
    pub(crate) fn start(lock: &Path) -> Holder {
        let child = heldlock()
            .arg("run")
            .arg(lock)
            .args(["--", "sleep", "30"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for("the holder to create the lock file", || {
            fs::read_to_string(lock).is_ok_and(|content| content.ends_with('\n'))
        });
        Holder { child }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            signal(&self.child, Signal::TERM);
            let _ = self.child.wait();
        }
    }
}

/// Writes a lock in the reference's format, `<pid> <uuid> <ISO time>\n`,
/// stamped `age` ago.
pub(crate) fn seed_reference_lock(lock: &Path, age: Duration) -> String {
    let content = "4194000 0b6c6a8e-6a8f-4d0e-9f1e-2a7d3c1b5e4f 2020-01-01T00:00:00.000Z\n";
    fs::write(lock, content).unwrap();
    let file = File::options().write(true).open(lock).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
    content.to_owned()
}

pub(crate) fn mtime(path: &Path) -> SystemTime {
    fs::symlink_metadata(path).unwrap().modified().unwrap()
}

pub(crate) fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

pub(crate) fn lock_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("test.lock")
}
