//! `release`: removing our own lock and nothing else, and the sweep of the
//! trash a release or break killed halfway leaves.

use std::fs;
use std::time::{Duration, SystemTime};

use heldlock_core::{LockBackend, OwnerId, Released};
use heldlock_fs::{FsBackend, record};

use crate::support::*;

#[test]
fn release_removes_our_lock_and_leaves_no_trash() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let backend = FsBackend::new(&path).unwrap();
    let record = rec();
    block_on(backend.try_create(&record)).unwrap();
    assert_eq!(
        block_on(backend.release(&record.owner)).unwrap(),
        Released::Released
    );
    assert!(!exists(&path));
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    // The owner is forgotten: a second release finds nothing.
    assert_eq!(
        block_on(backend.release(&record.owner)).unwrap(),
        Released::Absent
    );
}

#[test]
fn release_leaves_a_replacement_exactly_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let backend = FsBackend::new(&path).unwrap();
    let record = rec();
    for content in [other_owner_record(), record::encode(&record).into_bytes()] {
        block_on(backend.try_create(&record)).unwrap();
        replace(&path, &content, long_ago());
        let ino = inode(&path);
        assert_eq!(
            block_on(backend.release(&record.owner)).unwrap(),
            Released::NotOurs
        );
        assert_eq!(fs::read(&path).unwrap(), content, "byte-identical");
        assert_eq!(inode(&path), ino, "never moved out and back");
        assert_eq!(mtime(&path), long_ago());
        assert!(trash_in(dir.path()).is_empty());
        fs::remove_file(&path).unwrap();
    }
}

#[test]
fn release_when_nothing_is_there_is_absent() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let backend = FsBackend::new(&path).unwrap();
    let record = rec();
    block_on(backend.try_create(&record)).unwrap();
    fs::remove_file(&path).unwrap();
    assert_eq!(
        block_on(backend.release(&record.owner)).unwrap(),
        Released::Absent
    );
    assert_eq!(
        block_on(backend.release(&OwnerId::random())).unwrap(),
        Released::Absent
    );
}

#[test]
fn release_blocking_releases_on_the_real_file_system() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let backend = FsBackend::new(&path).unwrap();
    let record = rec();
    block_on(backend.try_create(&record)).unwrap();
    let other = OwnerId::random();
    assert!(matches!(
        backend.release_blocking(&other),
        Some(Ok(Released::NotOurs))
    ));
    assert!(exists(&path));
    assert!(matches!(
        backend.release_blocking(&record.owner),
        Some(Ok(Released::Released))
    ));
    assert!(!exists(&path));
}

/// Trash abandoned by a process killed between its rename and its unlink is
/// swept off the acquiring task (a thread of its own lists the directory),
/// once it is older than the lock's `stale`.
#[test]
fn abandoned_trash_is_swept_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let old = dir
        .path()
        .join(format!("{name}.releasing.{}", "a".repeat(32)));
    let young = dir
        .path()
        .join(format!("{name}.breaking.{}", "b".repeat(32)));
    let unrelated = dir.path().join("data.txt");
    for file in [&old, &young, &unrelated] {
        fs::write(file, b"").unwrap();
    }
    fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    let lock = heldlock_fs::FileLock::<heldlock_core::ManualClock>::new(
        &path,
        heldlock_core::LockOptions::new(Duration::from_secs(60)),
    )
    .unwrap();
    let held = block_on(lock.acquire()).unwrap();
    block_on(held.release()).unwrap();
    // Real time: the sweep runs on its own thread; 10 s is far beyond it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while old.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!old.exists(), "old trash is swept");
    assert!(young.exists(), "young trash may be a live step's: kept");
    assert!(unrelated.exists(), "nothing else is touched");
}
