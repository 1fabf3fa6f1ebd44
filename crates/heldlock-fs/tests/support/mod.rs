//! Helpers shared by the integration tests.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code, clippy::unwrap_used)]

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use heldlock_core::{Inspection, LockBackend, LockRecord, Observed, OwnerId};
use heldlock_fs::record;

pub(crate) use futures::executor::block_on;

/// A record with a fixed, whole-second stamp, so equality survives any file
/// system's timestamp granularity.
pub(crate) fn record_at(secs: u64) -> LockRecord {
    LockRecord {
        pid: 4242,
        owner: OwnerId::random(),
        acquired_at: UNIX_EPOCH + Duration::from_secs(secs),
        fields: Vec::new(),
    }
}

pub(crate) fn rec() -> LockRecord {
    record_at(1_795_777_040)
}

/// A whole-second wall-clock time, well in the past.
pub(crate) fn long_ago() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

pub(crate) fn observe<B: LockBackend>(backend: &B) -> Observed {
    match block_on(backend.inspect()).unwrap() {
        Inspection::Present(observed) => observed,
        Inspection::Absent => panic!("expected a lock at {}", backend.resource()),
    }
}

/// The names in `dir` that look like protocol trash.
pub(crate) fn trash_in(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".breaking.") || n.contains(".releasing."))
        .collect()
}

pub(crate) fn set_mtime(path: &Path, when: SystemTime) {
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(when)
        .unwrap();
}

pub(crate) fn mtime(path: &Path) -> SystemTime {
    fs::symlink_metadata(path).unwrap().modified().unwrap()
}

pub(crate) fn inode(path: &Path) -> (u64, u64) {
    let meta = fs::symlink_metadata(path).unwrap();
    (meta.dev(), meta.ino())
}

pub(crate) fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// What a peer does when it breaks our lock and takes it: a new inode at
/// the path, holding `content`, stamped `when`.
pub(crate) fn replace(path: &Path, content: &[u8], when: SystemTime) {
    let tmp = path.with_extension("peer-tmp");
    let mut file = fs::File::create_new(&tmp).unwrap();
    file.write_all(content).unwrap();
    file.set_modified(when).unwrap();
    drop(file);
    fs::rename(&tmp, path).unwrap();
}

/// Rewrites the file in place (same inode).
pub(crate) fn rewrite_in_place(path: &Path, content: &[u8]) {
    let mut file = fs::File::options()
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    file.write_all(content).unwrap();
}

pub(crate) fn other_owner_record() -> Vec<u8> {
    record::encode(&rec()).into_bytes()
}

pub(crate) fn lock_path(dir: &Path) -> PathBuf {
    dir.join("db.lock")
}
