//! What a failed or interrupted step leaves behind, and how it goes: no
//! empty lock of ours after a failed create, a moved lock kept (never
//! deleted) when its restore fails, a half-made lock that goes stale, and
//! trash that a sweep removed early or a dead holder left.

use std::fs;
use std::sync::Arc;
use std::time::{Duration, Instant};

use heldlock_core::{BackendError, Error, Lock, LockOptions, Released, Step};
use heldlock_fs::FsBackend;
use heldlock_tokio::TokioRuntime;
use rustix::io::Errno;

use crate::case::{Case, Scenario, exists, options, quiet, runtime};
use crate::support::*;
use crate::vfs_faults::{ERRNOS, FaultVfs, Op, errno_name, lock_on};

#[test]
fn a_create_whose_fstat_fails_leaves_no_empty_lock_behind() {
    let case = Case::new(Scenario::Free);
    // The stat is retried once: both attempts fail.
    case.vfs.fail(Op::Fstat, Errno::IO, 1);
    case.vfs.fail(Op::Fstat, Errno::IO, 2);
    let lock = case.lock(Scenario::Free, options(Scenario::Free));
    let outcome = runtime().block_on(lock.acquire());
    assert!(matches!(outcome, Err(Error::Backend(_))), "{outcome:?}");
    assert!(
        !exists(&case.path),
        "an empty lock file of ours is left behind"
    );
}

/// A break that moved a replacement (a peer's fresh lock that slipped in
/// before the rename) must put it back; when that fails, the moved lock is
/// kept in trash, never deleted, and the error names the step.
#[test]
fn a_failed_restore_keeps_the_moved_lock_and_reports_it() {
    let rt = runtime();
    for (op, nth, action, at_path, in_trash) in [
        (
            Op::Link,
            1,
            "restore the lock from trash with link",
            false,
            1,
        ),
        (
            Op::Unlink,
            1,
            "unlink the trash file after restoring",
            true,
            1,
        ),
    ] {
        for errno in ERRNOS {
            let what = format!("{} on {op:?} #{nth}", errno_name(errno));
            let case = Case::new(Scenario::StalePeer);
            let replacement = format!("4243 {OTHER_OWNER}-2 2026-11-27T10:57:20.000Z\n");
            let (probe, content) = (case.path.clone(), replacement.clone());
            // The look before the rename found the stale lock; then the
            // replacement takes its place.
            case.vfs.before(Op::Rename, 1, move |_| {
                let temp = probe.with_extension("peer");
                fs::write(&temp, &content).unwrap();
                fs::rename(&temp, &probe).unwrap();
            });
            case.vfs.fail(op, errno, nth);
            let lock = case.lock(Scenario::StalePeer, options(Scenario::StalePeer));
            match rt.block_on(lock.acquire()) {
                Err(Error::Backend(BackendError::Io {
                    step,
                    action: a,
                    source,
                    ..
                })) => {
                    assert_eq!((step, a), (Step::Break, action), "{what}");
                    assert_eq!(source.raw_os_error(), Some(errno.raw_os_error()), "{what}");
                }
                other => panic!("{what}: expected a break error, got {other:?}"),
            }
            assert_eq!(exists(&case.path), at_path, "{what}");
            if at_path {
                assert_eq!(
                    fs::read_to_string(&case.path).unwrap(),
                    replacement,
                    "{what}"
                );
            }
            let trash = trash_in(&case.dir);
            assert_eq!(trash.len(), in_trash, "{what}: {trash:?}");
            let kept = fs::read_to_string(case.dir.join(&trash[0])).unwrap();
            assert_eq!(kept, replacement, "{what}: the replacement is kept intact");
        }
    }
}

/// When even the clean-up of a failed create fails, the half-made (empty)
/// lock is left; it is not ours to keep fresh, so it goes stale and a peer
/// takes over after `stale`, not before.
#[test]
fn a_half_made_lock_that_cannot_be_removed_goes_stale() {
    let rt = runtime();
    let case = Case::new(Scenario::Free);
    case.vfs.fail(Op::Write, Errno::NOSPC, 1);
    case.vfs.fail(Op::Rename, Errno::IO, 1);
    let lock = case.lock(Scenario::Free, options(Scenario::Free));
    let error = rt.block_on(lock.acquire()).unwrap_err();
    assert!(
        error.to_string().contains("write the lock record"),
        "{error}"
    );
    assert_eq!(
        fs::read(&case.path).unwrap(),
        b"",
        "an empty, foreign-looking lock"
    );

    let stale = Duration::from_millis(300);
    let peer = lock_on(
        &case.path,
        &FaultVfs::new(),
        TokioRuntime,
        LockOptions::new(stale)
            .wall_clock_rule(false)
            .max_wait(Duration::from_secs(10)),
        false,
    );
    let started = Instant::now();
    let held = rt.block_on(peer.acquire()).unwrap();
    assert!(started.elapsed() >= stale, "broken before `stale`");
    assert_eq!(rt.block_on(held.release()).unwrap(), Released::Released);
}

/// Another process's sweep judges trash by its modification time, and a
/// stale lock moved to trash has an old one: the sweep may remove it
/// between the breaker's rename and its unlink. The break has still
/// removed the lock, and must say so (it failed with ENOENT, and
/// `heldlock run` exited without running its command).
#[test]
fn a_break_whose_trash_a_sweep_removed_first_still_takes_the_lock() {
    let rt = runtime();
    let case = Case::new(Scenario::StalePeer);
    case.vfs.before(Op::Unlink, 1, |path| {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.contains(".breaking."),
            "the first unlink is the trash's: {name}"
        );
        fs::remove_file(path).unwrap();
    });
    let lock = case.lock(Scenario::StalePeer, options(Scenario::StalePeer));
    let held = rt
        .block_on(lock.acquire())
        .expect("the stale lock was broken");
    assert_eq!(rt.block_on(held.release()).unwrap(), Released::Released);
    assert_eq!(trash_in(&case.dir), Vec::<String>::new());
}

/// A holder that dies between moving its lock to trash and unlinking it
/// (simulated: the unlink never happens) leaves `<lock>.releasing.<uuid>`
/// behind. The lock itself is free, and only the sweep of other processes
/// can remove that file; the chaos runs hit this now and then with real
/// `SIGKILL`s.
#[test]
fn trash_left_by_a_holder_that_died_mid_release_is_eventually_removed() {
    let rt = runtime();
    let case = Case::new(Scenario::Free);
    let lock = case.lock(Scenario::Free, quiet());
    let held = rt.block_on(lock.acquire()).unwrap();
    case.vfs
        .before(Op::Unlink, 1, |_| panic!("the holder dies here"));
    let died =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(held.release())));
    assert!(died.is_err());
    let trash = trash_in(&case.dir);
    assert_eq!(trash.len(), 1, "the dead holder's trash");
    assert!(!exists(&case.path), "the lock itself is free");

    // Other processes go on using the lock; while the trash is younger than
    // `stale`, its mover might only be paused, so it stays.
    let sweeping = |vfs: &FaultVfs| {
        let backend = FsBackend::with_vfs(&case.path, vfs.clone())
            .unwrap()
            .sweep_trash_older_than(Duration::from_secs(60));
        Lock::new(Arc::new(backend), Arc::new(TokioRuntime), quiet()).unwrap()
    };
    let peer = sweeping(&FaultVfs::new());
    let taken = rt.block_on(peer.acquire()).unwrap();
    assert_eq!(rt.block_on(taken.release()).unwrap(), Released::Released);
    assert_eq!(trash_in(&case.dir), trash, "young trash is left alone");

    // Once it is older than `stale`, the next process to take the lock sweeps it.
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(case.dir.join(&trash[0]))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let later = sweeping(&FaultVfs::new());
    let taken = rt.block_on(later.acquire()).unwrap();
    assert_eq!(rt.block_on(taken.release()).unwrap(), Released::Released);
    assert_eq!(
        trash_in(&case.dir),
        Vec::<String>::new(),
        "abandoned trash is swept"
    );
}
