//! `release` racing a replacement, failing halfway, and refused where it
//! would have to block.

use std::fs;
use std::io;

use heldlock_core::{Created, LockBackend, Released, Step};
use heldlock_fs::record;

use crate::hooked::hooked;
use crate::support::*;

#[test]
fn release_blocking_is_refused_on_a_vfs_that_may_pend() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let (backend, _) = hooked(&path);
    let record = rec();
    block_on(backend.try_create(&record)).unwrap();
    assert!(backend.release_blocking(&record.owner).is_none());
    assert!(exists(&path));
}

#[test]
fn behavior_18_release_pre_check_renames_nothing_when_the_lock_is_not_ours() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let (backend, vfs) = hooked(&path);
    let record = rec();
    block_on(backend.try_create(&record)).unwrap();
    replace(&path, &other_owner_record(), long_ago());
    assert_eq!(
        block_on(backend.release(&record.owner)).unwrap(),
        Released::NotOurs
    );
    assert!(!vfs.log().contains(&"rename"));
}

#[test]
fn release_restores_a_replacement_that_slipped_in_after_the_pre_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let (backend, vfs) = hooked(&path);
    let record = rec();
    block_on(backend.try_create(&record)).unwrap();
    let theirs = record::encode(&record).into_bytes(); // even a copy of ours
    let (probe, content) = (path.clone(), theirs.clone());
    vfs.before("rename", 1, move || replace(&probe, &content, long_ago()));
    assert_eq!(
        block_on(backend.release(&record.owner)).unwrap(),
        Released::NotOurs
    );
    assert_eq!(fs::read(&path).unwrap(), theirs);
    assert_eq!(mtime(&path), long_ago());
    assert!(trash_in(dir.path()).is_empty());
}

#[test]
fn release_keeps_the_owner_after_an_error_so_a_retry_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let (backend, vfs) = hooked(&path);
    let record = rec();
    block_on(backend.try_create(&record)).unwrap();
    vfs.fail("rename", 1, io::ErrorKind::Other);
    let err = block_on(backend.release(&record.owner)).unwrap_err();
    assert_eq!(err.step(), Step::Release);
    assert!(
        err.to_string().contains("rename the lock file to trash"),
        "{err}"
    );
    assert_eq!(
        block_on(backend.release(&record.owner)).unwrap(),
        Released::Released
    );
    assert!(!exists(&path));
}

/// A release that fails cannot be retried (the guard is gone): the
/// descriptor must not outlive it, or its kernel lock would tell every
/// contender on this host that a live process holds the lock, for as long
/// as this process runs.
#[test]
fn a_failed_release_lets_go_of_the_kernel_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.lock");
    let (backend, vfs) = hooked(&path);
    let record = rec();
    assert_eq!(
        block_on(backend.try_create(&record)).unwrap(),
        Created::Created
    );
    let kernel_held = || {
        let file = fs::File::open(&path).unwrap();
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockShared).is_err()
    };
    assert!(kernel_held(), "the holder's kernel lock");
    vfs.fail("rename", 1, io::ErrorKind::Other);
    assert!(block_on(backend.release(&record.owner)).is_err());
    assert!(path.exists(), "left to go stale");
    assert!(!kernel_held(), "no kernel lock once the release failed");
}
