//! Helpers shared by the integration tests.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code, unused_imports, clippy::unwrap_used)]

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use heldlock_core::{Inspection, LockBackend, LockRecord, Observed, OwnerId};
use heldlock_fs::record;

pub(crate) use futures::executor::block_on;

/// A record with a fixed, whole-second stamp, so equality survives any file
/// system's timestamp granularity.
pub(crate) fn record_at(secs: u64) -> LockRecord {
    LockRecord::new(
        4242,
        OwnerId::random(),
        UNIX_EPOCH + Duration::from_secs(secs),
    )
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
        other => panic!("expected a lock at {}: {other:?}", backend.resource()),
    }
}

pub(crate) use heldlock_testkit::leftovers::{
    PROTOCOL_FILE_KINDS, left_behind, queue_dir, queue_prefix, trash_in,
};

/// The waiter queue files left in [`queue_dir`] for locks in `lock_dir`.
pub(crate) fn queue_files_left(lock_dir: &Path) -> Vec<String> {
    heldlock_testkit::leftovers::queue_files_left_in(&queue_dir(), lock_dir)
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

/// Visible, countable skips, shared by every test suite of the workspace
/// (not every test binary that includes this module makes one).
#[allow(unused_imports)]
pub(crate) use heldlock_testkit::{skip, skip_unless_required};

/// Whether this process can make an inotify descriptor: asked of the kernel
/// directly, not of the code under test, so that a listener that is never
/// made where it could be fails its test instead of skipping it.
pub(crate) fn inotify_available() -> bool {
    rustix::fs::inotify::init(rustix::fs::inotify::CreateFlags::CLOEXEC).is_ok()
}
