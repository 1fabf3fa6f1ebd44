//! `refresh`: the holder's stamp, and how it finds out the lock is lost.

use std::fs;
use std::time::{Duration, SystemTime};

use heldlock_core::{LockBackend, OwnerId, Refreshed};
use heldlock_fs::{FsBackend, record};

use crate::support::*;

#[test]
fn refresh_stamps_our_lock_while_it_is_ours() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let backend = FsBackend::new(&path).unwrap();
    let record = rec();
    block_on(backend.try_create(&record)).unwrap();
    set_mtime(&path, long_ago());
    let now = long_ago() + Duration::from_secs(3600);
    assert_eq!(
        block_on(backend.refresh(&record.owner, now)).unwrap(),
        Refreshed::Refreshed
    );
    assert_eq!(mtime(&path), now);
}

#[test]
fn refresh_of_an_unknown_owner_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let backend = FsBackend::new(&path).unwrap();
    block_on(backend.try_create(&rec())).unwrap();
    let stamp = mtime(&path);
    let stranger = OwnerId::random();
    assert_eq!(
        block_on(backend.refresh(&stranger, SystemTime::now())).unwrap(),
        Refreshed::Lost
    );
    assert_eq!(mtime(&path), stamp);
}

#[test]
fn refresh_is_lost_after_a_peer_replaced_the_lock_and_leaves_its_stamp_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let backend = FsBackend::new(&path).unwrap();
    let record = rec();
    block_on(backend.try_create(&record)).unwrap();
    // Even a copy of our own record on another inode is not our lock.
    for content in [other_owner_record(), record::encode(&record).into_bytes()] {
        replace(&path, &content, long_ago());
        assert_eq!(
            block_on(backend.refresh(&record.owner, SystemTime::now())).unwrap(),
            Refreshed::Lost
        );
        assert_eq!(mtime(&path), long_ago(), "the replacement was touched");
        assert_eq!(fs::read(&path).unwrap(), content);
    }
}

#[test]
fn refresh_is_lost_after_an_in_place_rewrite_naming_another_owner() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let backend = FsBackend::new(&path).unwrap();
    let record = rec();
    block_on(backend.try_create(&record)).unwrap();
    let ino = inode(&path);
    rewrite_in_place(&path, &other_owner_record());
    set_mtime(&path, long_ago());
    assert_eq!(inode(&path), ino, "same inode, other owner");
    assert_eq!(
        block_on(backend.refresh(&record.owner, SystemTime::now())).unwrap(),
        Refreshed::Lost
    );
    assert_eq!(mtime(&path), long_ago());
}

#[test]
fn refresh_is_lost_once_the_lock_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let backend = FsBackend::new(&path).unwrap();
    let record = rec();
    block_on(backend.try_create(&record)).unwrap();
    fs::remove_file(&path).unwrap();
    assert_eq!(
        block_on(backend.refresh(&record.owner, SystemTime::now())).unwrap(),
        Refreshed::Lost
    );
    assert!(!exists(&path));
}
