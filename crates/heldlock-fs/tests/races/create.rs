//! `try_create` interrupted: a failed write, and a create whose file was
//! broken and replaced before its record was written.

use std::fs;
use std::io;

use heldlock_core::{Created, LockBackend, Released, Step};
use heldlock_fs::record;

use crate::hooked::hooked;
use crate::support::*;

#[test]
fn a_failed_record_write_leaves_no_lock_and_no_trash() {
    for (op, sync) in [("write_all", false), ("set_mtime", false), ("sync", true)] {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(dir.path());
        let (backend, vfs) = hooked(&path);
        let backend = backend.sync_writes(sync);
        vfs.fail(op, 1, io::ErrorKind::StorageFull);
        let err = block_on(backend.try_create(&rec())).unwrap_err();
        assert_eq!(err.step(), Step::Create, "{err}");
        assert_eq!(err.io_kind(), Some(io::ErrorKind::StorageFull));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0, "{op}");
    }
}

#[test]
fn cleaning_up_a_failed_create_never_removes_a_lock_that_replaced_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let (backend, vfs) = hooked(&path);
    vfs.fail("write_all", 1, io::ErrorKind::StorageFull);
    let theirs = other_owner_record();
    let (probe, content) = (path.clone(), theirs.clone());
    // Our half-made file is broken and replaced just before the clean-up.
    vfs.before("rename", 1, move || replace(&probe, &content, long_ago()));
    block_on(backend.try_create(&rec())).unwrap_err();
    assert_eq!(fs::read(&path).unwrap(), theirs);
    assert!(trash_in(dir.path()).is_empty());
}

/// A holder paused between its create and its write declares nothing yet:
/// a contender with a shorter `stale` may break its empty file meanwhile and
/// take the lock. Resumed, the holder writes into its orphaned inode; it
/// must then find the path no longer its own and report `Exists`, not
/// `Created` (before the check, both believed they held the lock).
#[test]
fn a_create_whose_empty_file_was_broken_before_its_write_does_not_hold() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.lock");
    let (backend, vfs) = hooked(&path);
    let intruder = path.clone();
    let theirs = record::encode(&rec());
    let planted = theirs.clone();
    vfs.before("write_all", 1, move || {
        // What a breaker leaves (our empty file gone to its trash) and a new
        // holder makes: another lock at the path.
        fs::rename(&intruder, intruder.with_extension("trash")).unwrap();
        fs::remove_file(intruder.with_extension("trash")).unwrap();
        fs::write(&intruder, planted).unwrap();
    });
    let mine = rec();
    assert_eq!(
        block_on(backend.try_create(&mine)).unwrap(),
        Created::Exists
    );
    // The new holder's lock is untouched, and nothing of ours claims it.
    assert_eq!(fs::read_to_string(&path).unwrap(), theirs);
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    assert_eq!(
        block_on(backend.release(&mine.owner)).unwrap(),
        Released::NotOurs
    );
}
