//! Faults while the lock is held: a failed `refresh()` or `release()` is a
//! typed error, a failed release stops the heartbeat so that the lock goes
//! stale, and a heartbeat that keeps failing warns, then reports the lock
//! lost before a peer may take it.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use heldlock_core::{BackendError, Error, LockOptions, Released, Step};
use heldlock_tokio::TokioRuntime;
use rustix::io::Errno;

use crate::case::{Case, Scenario, exists, quiet, runtime};
use crate::support::*;
use crate::vfs_faults::{ERRNOS, FaultVfs, Op, errno_name, lock_on};

/// Fails each call of `refresh()` in turn: a typed `Refresh` error, and the
/// lock is still ours afterwards.
#[test]
fn every_refresh_step_fails_with_a_typed_error_and_keeps_the_lock() {
    let rt = runtime();
    let expected: &[(Op, usize, &str)] = &[
        (Op::Lstat, 1, "stat the lock file"),
        (Op::Read, 1, "read the lock file"),
        (Op::SetMtime, 1, "set the lock file's modification time"),
        (Op::Lstat, 2, "stat the lock file"),
        (Op::Read, 2, "read the lock file"),
    ];
    for &(op, nth, action) in expected {
        for errno in ERRNOS {
            let what = format!("{} on {op:?} #{nth}", errno_name(errno));
            let case = Case::new(Scenario::Free);
            let lock = case.lock(Scenario::Free, quiet());
            rt.block_on(async {
                let held = lock.acquire().await.unwrap();
                case.vfs.clear_log();
                case.vfs.fail(op, errno, nth);
                match held.refresh().await {
                    Err(Error::Backend(BackendError::Io {
                        step,
                        resource,
                        action: a,
                        source,
                    })) => {
                        assert_eq!((step, a), (Step::Refresh, action), "{what}");
                        assert_eq!(resource, case.path.display().to_string());
                        assert_eq!(source.raw_os_error(), Some(errno.raw_os_error()));
                    }
                    other => panic!("{what}: expected a refresh error, got {other:?}"),
                }
                assert!(!held.is_lost(), "{what}: an error is not a loss");
                assert!(held.refresh().await.unwrap(), "{what}: still ours");
                assert_eq!(held.release().await.unwrap(), Released::Released);
            });
        }
    }
}

/// Fails each call of `release()` in turn: a typed `Release` error; the lock
/// is either still at its path (and, its heartbeat stopped, goes stale) or
/// already moved out (and then only an unlinkable trash file is left).
#[test]
fn every_release_step_fails_with_a_typed_error() {
    let rt = runtime();
    let expected: &[(Op, usize, &str, bool)] = &[
        // (op, nth, action, the lock is still at the path afterwards)
        (Op::Lstat, 1, "stat the lock file", true),
        (Op::Read, 1, "read the lock file", true),
        (Op::Rename, 1, "rename the lock file to trash", true),
        (Op::Lstat, 2, "stat the trash file", true),
        // Our own lock in trash is read through the descriptor kept since
        // its creation, never re-opened by name.
        (Op::Read, 2, "read the trash file", true),
        (Op::Unlink, 1, "unlink the trash file", false),
    ];
    for &(op, nth, action, stays) in expected {
        for errno in ERRNOS {
            if errno == Errno::ACCESS
                && action.contains("trash")
                && matches!(op, Op::OpenRead | Op::Read)
            {
                // An unreadable trash file: see
                // `hostile::other_users::a_holder_that_cannot_reopen_its_own_lock_still_releases_it`.
                continue;
            }
            let what = format!("{} on {op:?} #{nth}", errno_name(errno));
            let case = Case::new(Scenario::Free);
            let lock = case.lock(Scenario::Free, quiet());
            rt.block_on(async {
                let held = lock.acquire().await.unwrap();
                let ino = fs::metadata(&case.path).unwrap().ino();
                let content = fs::read(&case.path).unwrap();
                case.vfs.clear_log();
                case.vfs.fail(op, errno, nth);
                match held.release().await {
                    Err(Error::Backend(BackendError::Io {
                        step,
                        resource,
                        action: a,
                        source,
                    })) => {
                        assert_eq!((step, a), (Step::Release, action), "{what}");
                        assert_eq!(resource, case.path.display().to_string());
                        assert_eq!(source.raw_os_error(), Some(errno.raw_os_error()));
                    }
                    other => panic!("{what}: expected a release error, got {other:?}"),
                }
                let trash = trash_in(&case.dir);
                if stays {
                    assert_eq!(fs::metadata(&case.path).unwrap().ino(), ino, "{what}");
                    assert_eq!(fs::read(&case.path).unwrap(), content, "{what}");
                    assert!(trash.is_empty(), "{what}: {trash:?}");
                } else {
                    assert!(!exists(&case.path), "{what}");
                    assert_eq!(trash.len(), 1, "{what}: {trash:?}");
                    assert!(trash[0].contains(".releasing."), "{what}");
                }
            });
        }
    }
}

/// After a failed release the heartbeat has stopped: the lock's stamp no
/// longer moves, so it goes stale and a peer takes it over.
#[test]
fn a_failed_release_leaves_a_lock_that_goes_stale() {
    let rt = runtime();
    let stale = Duration::from_millis(400);
    let fast = LockOptions::new(stale).heartbeat(Duration::from_millis(50));
    for (op, errno) in [(Op::Rename, Errno::IO), (Op::Lstat, Errno::ROFS)] {
        let case = Case::new(Scenario::Free);
        let lock = case.lock(Scenario::Free, fast.clone());
        rt.block_on(async {
            let held = lock.acquire().await.unwrap();
            // The heartbeat runs: the stamp moves while held.
            let first = mtime(&case.path);
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(mtime(&case.path) > first, "the heartbeat keeps it fresh");

            case.vfs.fail(op, errno, 1);
            let error = held.release().await.unwrap_err();
            assert!(error.to_string().contains("release"), "{error}");
            let frozen = mtime(&case.path);
            // Real time: four heartbeats' worth.
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(
                mtime(&case.path),
                frozen,
                "{op:?}: the stamp moved after release"
            );

            let peer = lock_on(
                &case.path,
                &FaultVfs::new(),
                TokioRuntime,
                LockOptions::new(stale).max_wait(Duration::from_secs(10)),
                false,
            );
            let started = Instant::now();
            let taken = peer.acquire().await.unwrap();
            assert!(started.elapsed() < Duration::from_secs(5));
            assert_eq!(taken.release().await.unwrap(), Released::Released);
        });
    }
}

/// A heartbeat that keeps failing is retried with a warning at every beat,
/// and after `stale` without a successful refresh the holder is told it
/// lost the lock before a peer may take it.
#[test]
fn a_failing_heartbeat_warns_then_reports_the_lock_lost() {
    let rt = runtime();
    let stale = Duration::from_millis(500);
    for (op, errno) in [
        (Op::SetMtime, Errno::IO),
        (Op::SetMtime, Errno::ROFS),
        (Op::Lstat, Errno::IO),
        (Op::Read, Errno::NOSPC),
    ] {
        let what = format!("{} on every {op:?}", errno_name(errno));
        let case = Case::new(Scenario::Free);
        let lock = case.lock(
            Scenario::Free,
            LockOptions::new(stale).heartbeat(Duration::from_millis(50)),
        );
        rt.block_on(async {
            let held = lock.acquire().await.unwrap();
            case.vfs.fail_from(op, errno, 1);
            let frozen = mtime(&case.path);
            let started = Instant::now();
            tokio::time::timeout(Duration::from_secs(20), held.lost())
                .await
                .unwrap_or_else(|_| panic!("{what}: never reported lost"));
            assert!(
                started.elapsed() >= stale - Duration::from_millis(60),
                "{what}"
            );
            assert!(case.warnings.any("heartbeat failed, will retry"), "{what}");
            assert!(case.warnings.any("a peer may break the lock"), "{what}");
            assert_eq!(mtime(&case.path), frozen, "{what}: the stamp moved");
            assert!(
                matches!(held.refresh().await, Ok(false)),
                "{what}: lost stays lost"
            );

            let peer = lock_on(
                &case.path,
                &FaultVfs::new(),
                TokioRuntime,
                LockOptions::new(stale).max_wait(Duration::from_secs(10)),
                false,
            );
            let taken = peer.acquire().await.unwrap();
            assert_eq!(taken.release().await.unwrap(), Released::Released);
            case.vfs.heal();
            let released = held.release().await.unwrap();
            assert_eq!(released, Released::Absent, "{what}");
        });
    }
}
