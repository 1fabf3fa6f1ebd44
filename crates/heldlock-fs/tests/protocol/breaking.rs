//! `break_if_unchanged` and `break_anything`: a stale lock goes only as it
//! was observed; a changed, replaced or recreated one stays.

use std::fs;
use std::time::{Duration, SystemTime};

use heldlock_core::{BackendError, Broke, Holder, Inspection, LockBackend, Refreshed, Step};
use heldlock_fs::FsBackend;

use crate::support::{self, *};

#[test]
fn break_removes_an_unchanged_stale_lock_and_leaves_no_trash() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let holder = FsBackend::new(&path).unwrap();
    let contender = FsBackend::new(&path).unwrap();
    let record = rec();
    block_on(holder.try_create(&record)).unwrap();
    set_mtime(&path, long_ago());
    let observed = observe(&contender);
    assert_eq!(observed.refreshed_at, long_ago());
    assert_eq!(
        block_on(contender.break_if_unchanged(&observed)).unwrap(),
        Broke::Broken
    );
    assert!(!exists(&path));
    assert!(trash_in(dir.path()).is_empty());
    // The broken holder finds out.
    assert_eq!(
        block_on(holder.refresh(&record.owner, SystemTime::now())).unwrap(),
        Refreshed::Lost
    );
    assert_eq!(
        block_on(contender.break_if_unchanged(&observed)).unwrap(),
        Broke::Absent
    );
}

#[test]
fn behavior_15_break_leaves_a_replacement_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let backend = FsBackend::new(&path).unwrap();
    block_on(backend.try_create(&rec())).unwrap();
    let observed = observe(&backend);
    // A replacement with the very same content and stamp, on a new inode.
    let content = fs::read(&path).unwrap();
    replace(&path, &content, observed.refreshed_at);
    let ino = inode(&path);
    assert_eq!(
        block_on(backend.break_if_unchanged(&observed)).unwrap(),
        Broke::Changed
    );
    assert_eq!(fs::read(&path).unwrap(), content);
    assert_eq!(inode(&path), ino);
    assert_eq!(mtime(&path), observed.refreshed_at);
    assert!(trash_in(dir.path()).is_empty());
}

#[test]
fn break_after_a_refresh_is_changed() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let backend = FsBackend::new(&path).unwrap();
    let record = rec();
    block_on(backend.try_create(&record)).unwrap();
    set_mtime(&path, long_ago());
    let observed = observe(&backend);
    let now = long_ago() + Duration::from_secs(1);
    block_on(backend.refresh(&record.owner, now)).unwrap();
    assert_eq!(
        block_on(backend.break_if_unchanged(&observed)).unwrap(),
        Broke::Changed
    );
    assert_eq!(mtime(&path), now);
    assert_eq!(
        block_on(backend.refresh(&record.owner, now)).unwrap(),
        Refreshed::Refreshed
    );
}

#[test]
fn break_after_an_in_place_rewrite_is_changed() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    // Two starts of records of the same length: only the content differs.
    fs::write(&path, b"4242 0f8fad5b").unwrap();
    set_mtime(&path, long_ago());
    let backend = FsBackend::new(&path).unwrap();
    let observed = observe(&backend);
    rewrite_in_place(&path, b"4242 0f9fad5b");
    set_mtime(&path, long_ago());
    assert_eq!(
        block_on(backend.break_if_unchanged(&observed)).unwrap(),
        Broke::Changed
    );
    assert_eq!(fs::read(&path).unwrap(), b"4242 0f9fad5b");
    // Observed afresh, the foreign lock is breakable.
    let observed = observe(&backend);
    assert_eq!(
        block_on(backend.break_if_unchanged(&observed)).unwrap(),
        Broke::Broken
    );
    assert!(!exists(&path));
}

#[test]
fn break_never_removes_a_file_that_is_not_a_lock_even_when_told_it_is_breakable() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    fs::write(&path, b"stale foreign lock").unwrap();
    set_mtime(&path, long_ago());
    let backend = FsBackend::new(&path).unwrap();
    let observed = match block_on(backend.inspect_anything()).unwrap() {
        Inspection::Present(observed) => observed,
        other => panic!("the file is there: {other:?}"),
    };
    assert!(!observed.breakable);
    assert_eq!(
        observed.holder,
        Holder::Foreign {
            summary: "stale foreign lock".to_owned()
        }
    );
    // The re-check under the break sees the content again and refuses it,
    // whatever the observation claims.
    match block_on(backend.break_if_unchanged(&observed.clone().with_breakable(true))) {
        Err(BackendError::NotALockFile {
            step: Step::Break,
            size: 18,
            excerpt,
            ..
        }) => assert_eq!(excerpt, "stale foreign lock"),
        other => panic!("expected NotALockFile, got {other:?}"),
    }
    assert_eq!(fs::read(&path).unwrap(), b"stale foreign lock");
    assert_eq!(mtime(&path), long_ago());
    assert!(trash_in(dir.path()).is_empty());
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no marker left"
    );
    // Forced, it goes.
    assert_eq!(
        block_on(backend.break_anything(&observed)).unwrap(),
        Broke::Broken
    );
    assert!(!exists(&path));
    assert!(trash_in(dir.path()).is_empty());
}

#[test]
fn a_lock_recreated_on_a_reused_inode_with_a_copied_record_is_another_lock() {
    use heldlock_fs::Vfs;
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let (a, b, c) = (
        FsBackend::new(&path).unwrap(),
        FsBackend::new(&path).unwrap(),
        FsBackend::new(&path).unwrap(),
    );
    let record = rec();
    block_on(a.try_create(&record)).unwrap();
    let first = observe(&c);
    let first_inode = inode(&path);
    block_on(a.release(&record.owner)).unwrap();
    block_on(b.try_create(&record)).unwrap();
    let second = observe(&c);
    let birth = block_on(heldlock_fs::RealFs.lstat(&path)).unwrap().birth;
    if inode(&path) == first_inode && birth.is_none() {
        // Same inode, content and stamp, and no birth time to tell them
        // apart: this file system cannot distinguish the two instances.
        support::skip(
            "a_lock_recreated_on_a_reused_inode_with_a_copied_record_is_another_lock",
            "inode reused and no birth time on this file system",
        );
        return;
    }
    assert_ne!(first.identity, second.identity);
    assert_eq!(
        block_on(c.break_if_unchanged(&first)).unwrap(),
        Broke::Changed
    );
    assert_eq!(observe(&c), second);
}
