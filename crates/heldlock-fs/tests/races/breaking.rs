//! `break_if_unchanged` racing replacements, third locks and other
//! breakers: it removes only the lock it observed, and puts back (or keeps)
//! whatever it moved aside by mistake.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use heldlock_core::{Broke, LockBackend, Step};
use heldlock_fs::record;

use crate::hooked::{STALE_FOREIGN, stale_foreign_lock};
use crate::support::*;

#[test]
fn behavior_34_break_restores_a_replacement_that_slipped_in_before_the_rename() {
    let (dir, path, backend, vfs, observed) = stale_foreign_lock();
    let theirs = other_owner_record();
    let (probe, content) = (path.clone(), theirs.clone());
    vfs.before("rename", 1, move || {
        replace(&probe, &content, SystemTime::now())
    });
    assert_eq!(
        block_on(backend.break_if_unchanged(&observed)).unwrap(),
        Broke::Changed
    );
    assert_eq!(fs::read(&path).unwrap(), theirs);
    assert!(trash_in(dir.path()).is_empty());
    assert!(vfs.log().contains(&"link"), "restored with link");
}

#[test]
fn break_keeps_the_restored_replacement_identical() {
    let (_dir, path, backend, vfs, observed) = stale_foreign_lock();
    let theirs = other_owner_record();
    let stamp = long_ago() + std::time::Duration::from_secs(7);
    let (probe, content) = (path.clone(), theirs.clone());
    let seen = Arc::new(Mutex::new(None));
    let seen_in_hook = Arc::clone(&seen);
    vfs.before("rename", 1, move || {
        replace(&probe, &content, stamp);
        *seen_in_hook.lock().unwrap() = Some(inode(&probe));
    });
    block_on(backend.break_if_unchanged(&observed)).unwrap();
    assert_eq!(fs::read(&path).unwrap(), theirs);
    assert_eq!(Some(inode(&path)), *seen.lock().unwrap(), "the same inode");
    assert_eq!(mtime(&path), stamp);
}

#[test]
fn break_never_replaces_a_third_lock_created_while_the_moved_one_was_in_trash() {
    let (dir, path, backend, vfs, observed) = stale_foreign_lock();
    // A replacement slips in before our rename, and a third lock takes the
    // path while the replacement is in our trash.
    let probe = path.clone();
    vfs.before("rename", 1, move || {
        replace(&probe, b"5151 1a2b3c4d", long_ago())
    });
    // The first `open_read` is the re-check, the second the look under the
    // break marker, the third looks at the trash.
    let probe = path.clone();
    vfs.before("open_read", 3, move || {
        fs::write(&probe, b"6262 3c4d5e6f").unwrap()
    });
    assert_eq!(
        block_on(backend.break_if_unchanged(&observed)).unwrap(),
        Broke::Changed
    );
    assert_eq!(fs::read(&path).unwrap(), b"6262 3c4d5e6f");
    assert!(trash_in(dir.path()).is_empty());
    assert!(vfs.log().contains(&"link"), "a restore was attempted");
}

#[test]
fn break_removes_the_observed_lock_even_if_a_new_one_appears_meanwhile() {
    let (dir, path, backend, vfs, observed) = stale_foreign_lock();
    let probe = path.clone();
    // The third `open_read` looks at the trash (after the re-check and the
    // look under the break marker).
    vfs.before("open_read", 3, move || {
        fs::write(&probe, b"7373 5e6f7a8b").unwrap()
    });
    assert_eq!(
        block_on(backend.break_if_unchanged(&observed)).unwrap(),
        Broke::Broken
    );
    assert_eq!(fs::read(&path).unwrap(), b"7373 5e6f7a8b");
    assert!(trash_in(dir.path()).is_empty());
}

#[test]
fn break_is_absent_when_another_contender_broke_it_first() {
    let (dir, path, backend, vfs, observed) = stale_foreign_lock();
    let probe = path.clone();
    vfs.before("rename", 1, move || fs::remove_file(&probe).unwrap());
    assert_eq!(
        block_on(backend.break_if_unchanged(&observed)).unwrap(),
        Broke::Absent
    );
    assert!(trash_in(dir.path()).is_empty());
}

#[test]
fn a_trash_that_cannot_be_inspected_is_put_back() {
    let (dir, path, backend, vfs, observed) = stale_foreign_lock();
    // The third `open_read` looks at the trash.
    vfs.fail("open_read", 3, io::ErrorKind::Other);
    let err = block_on(backend.break_if_unchanged(&observed)).unwrap_err();
    assert_eq!(err.step(), Step::Break);
    assert!(err.to_string().contains("trash"), "{err}");
    assert_eq!(fs::read(&path).unwrap(), STALE_FOREIGN);
    assert!(trash_in(dir.path()).is_empty());
}

/// Somebody's file moved onto the lock path between the breaker's look and
/// its rename, and a third contender's lock created while it sits in trash:
/// the link back fails. It is not a lock, so it is never removed: it is kept
/// under a name of its own, and the break fails naming it.
#[test]
fn a_non_lock_moved_aside_by_mistake_is_kept_when_it_cannot_be_put_back() {
    let (dir, path, backend, vfs, observed) = stale_foreign_lock();
    let probe = path.clone();
    vfs.before("rename", 1, move || {
        replace(&probe, b"precious user data\n", long_ago())
    });
    let probe = path.clone();
    // The look at what was moved to trash: a third contender's lock appears.
    vfs.before("open_read", 3, move || {
        fs::write(&probe, record::encode(&rec())).unwrap()
    });
    let outcome = block_on(backend.break_if_unchanged(&observed));
    let message = match outcome {
        Err(error) => error.to_string(),
        other => panic!("expected the break to fail naming the kept file, got {other:?}"),
    };
    let kept: Vec<PathBuf> = fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|p| fs::read(p).is_ok_and(|content| content == b"precious user data\n"))
        .collect();
    assert_eq!(kept.len(), 1, "the user's file was deleted");
    assert!(message.contains(&*kept[0].to_string_lossy()), "{message}");
    assert!(kept[0].to_string_lossy().contains(".displaced."));
}
