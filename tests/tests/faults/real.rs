//! Real faults where this machine allows: a full tmpfs and a read-only
//! one, mounted for the test (skipped, visibly, where mounting is not
//! permitted).

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use heldlock_core::{BackendError, Error, LockOptions, Released, Step};
use rustix::io::Errno;

use crate::case::exists;
use crate::support::{self, *};
use crate::vfs_faults::Warnings;

/// A tmpfs mounted for one test, unmounted on drop.
struct Mount {
    path: PathBuf,
}

impl Mount {
    /// `None` (after printing why) where mounting is not permitted.
    fn tmpfs(test: &str, path: &Path, size: &str) -> Option<Mount> {
        fs::create_dir_all(path).unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output();
        match output {
            Ok(output) if output.status.success() => Some(Mount {
                path: path.to_path_buf(),
            }),
            Ok(output) => {
                support::skip(
                    test,
                    &format!(
                        "cannot mount a tmpfs ({}): {}",
                        output.status,
                        String::from_utf8_lossy(&output.stderr).trim()
                    ),
                );
                None
            }
            Err(error) => {
                support::skip(test, &format!("no mount command ({error})"));
                None
            }
        }
    }

    fn remount(&self, options: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(status.success(), "remount {options}");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

#[test]
fn a_full_file_system_fails_the_create_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = Mount::tmpfs(
        "a_full_file_system_fails_the_create_and_leaves_nothing",
        &dir.path().join("mnt"),
        "64k",
    ) else {
        return;
    };
    let path = mount.path.join("state.lock");
    let filler = mount.path.join("filler");
    let mut file = fs::File::create(&filler).unwrap();
    let chunk = [0u8; 4096];
    let full = loop {
        match file.write_all(&chunk) {
            Ok(()) => {}
            Err(e) => break e,
        }
    };
    drop(file);
    assert_eq!(full.raw_os_error(), Some(Errno::NOSPC.raw_os_error()));

    let warnings = Warnings::default();
    let lock = heldlock::blocking::FileLock::new(
        &path,
        warnings.hook(LockOptions::new(Duration::from_secs(5))),
    )
    .unwrap();
    match lock.acquire() {
        Err(Error::Backend(BackendError::Io {
            step,
            resource,
            action,
            source,
        })) => {
            assert_eq!(step, Step::Create);
            assert_eq!(action, "write the lock record");
            assert_eq!(resource, path.display().to_string());
            assert_eq!(source.raw_os_error(), Some(Errno::NOSPC.raw_os_error()));
        }
        other => panic!("expected ENOSPC on create, got {other:?}"),
    }
    assert!(!exists(&path), "the half-made lock was removed");
    assert!(trash_in(&mount.path).is_empty());
    assert!(!lock.with_lock(|state| state.acquired()));
    assert!(warnings.any("running the task without the lock"));

    fs::remove_file(&filler).unwrap();
    let held = lock.acquire().unwrap();
    assert_eq!(held.release().unwrap(), Released::Released);
}

#[test]
fn a_read_only_file_system_fails_create_and_break_with_erofs() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = Mount::tmpfs(
        "a_read_only_file_system_fails_create_and_break_with_erofs",
        &dir.path().join("mnt"),
        "1m",
    ) else {
        return;
    };
    let free = mount.path.join("free.lock");
    let stale = mount.path.join("stale.lock");
    let content = write_reference_lock(&stale, 4242, OTHER_OWNER, ago(Duration::from_secs(60)));
    set_mtime(&stale, ago(Duration::from_secs(60)));
    let before = (fs::metadata(&stale).unwrap().ino(), mtime(&stale));
    mount.remount("ro");

    let erofs = Some(Errno::ROFS.raw_os_error());
    let options = LockOptions::new(Duration::from_secs(5));
    for (path, step, action) in [
        (&free, Step::Create, "create the lock file"),
        // Breaking starts with the break marker beside the stale lock, which
        // a read-only file system refuses first.
        (&stale, Step::Break, "create the break marker"),
    ] {
        let lock = heldlock::blocking::FileLock::new(path, options.clone()).unwrap();
        match lock.acquire() {
            Err(Error::Backend(BackendError::Io {
                step: s,
                action: a,
                source,
                ..
            })) => {
                assert_eq!((s, a), (step, action), "{}", path.display());
                assert_eq!(source.raw_os_error(), erofs);
            }
            other => panic!("expected EROFS, got {other:?}"),
        }
        assert!(!lock.with_lock(|state| state.acquired()));
    }
    assert!(!exists(&free));
    assert_eq!(fs::read_to_string(&stale).unwrap(), content);
    assert_eq!((fs::metadata(&stale).unwrap().ino(), mtime(&stale)), before);
    mount.remount("rw");
    let lock = heldlock::blocking::FileLock::new(&stale, options).unwrap();
    assert_eq!(
        lock.acquire().unwrap().release().unwrap(),
        Released::Released
    );
}
