//! `refresh` racing a peer that replaces or removes the lock between its
//! check and its touch.

use std::fs;
use std::time::SystemTime;

use heldlock_core::{LockBackend, Refreshed};

use crate::hooked::hooked;
use crate::support::*;

#[test]
fn behavior_32_refresh_is_lost_when_a_peer_replaces_the_lock_between_check_and_touch() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let (backend, vfs) = hooked(&path);
    let record = rec();
    block_on(backend.try_create(&record)).unwrap();
    let (probe, theirs) = (path.clone(), other_owner_record());
    vfs.before("set_mtime", 1, move || replace(&probe, &theirs, long_ago()));
    assert_eq!(
        block_on(backend.refresh(&record.owner, SystemTime::now())).unwrap(),
        Refreshed::Lost
    );
    assert_eq!(mtime(&path), long_ago(), "the replacement kept its stamp");
}

#[test]
fn behavior_31_refresh_is_lost_when_the_lock_vanishes_between_check_and_touch() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let (backend, vfs) = hooked(&path);
    let record = rec();
    block_on(backend.try_create(&record)).unwrap();
    let probe = path.clone();
    vfs.before("set_mtime", 1, move || fs::remove_file(&probe).unwrap());
    assert_eq!(
        block_on(backend.refresh(&record.owner, SystemTime::now())).unwrap(),
        Refreshed::Lost
    );
    assert!(!exists(&path));
}

#[test]
fn refresh_does_not_touch_anything_when_the_first_check_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let (backend, vfs) = hooked(&path);
    let record = rec();
    block_on(backend.try_create(&record)).unwrap();
    replace(&path, &other_owner_record(), long_ago());
    let before = vfs.log().len();
    block_on(backend.refresh(&record.owner, SystemTime::now())).unwrap();
    assert!(!vfs.log()[before..].contains(&"set_mtime"));
}
