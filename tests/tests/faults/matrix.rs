//! Every call of a fault-free acquisition failed in turn, once, with each
//! errno of [`ERRNOS`]: the strict `acquire()` absorbs the fault or names
//! the step, the action and the errno; best effort runs its task exactly
//! once; the files left beside the lock are exactly what that fault may
//! leave, and go the way the protocol says.

use std::collections::HashMap;
use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use heldlock_core::{BackendError, Error, Lock, Released, Step};
use heldlock_fs::FsBackend;
use heldlock_tokio::TokioRuntime;
use rustix::io::Errno;

use crate::case::{Case, Scenario, exists, options, quiet, runtime};
use crate::support::*;
use crate::vfs_faults::{ERRNOS, FaultVfs, Op, errno_name};

/// The calls of a fault-free acquisition: (op, its occurrence, 1-based).
fn calls_of(scenario: Scenario) -> Vec<(Op, usize)> {
    let case = Case::new(scenario);
    let rt = runtime();
    let outcome = rt.block_on(async {
        let lock = case.lock(scenario, options(scenario));
        match lock.acquire().await {
            Ok(held) => {
                let ops = case.vfs.ops();
                assert_eq!(held.release().await.unwrap(), Released::Released);
                Ok(ops)
            }
            Err(error) => Err((error, case.vfs.ops())),
        }
    });
    let ops = match (scenario, outcome) {
        (Scenario::FreshPeer, Err((Error::Timeout { .. }, ops))) => {
            // Only the first round; later rounds repeat it.
            ops.into_iter().take(5).collect()
        }
        (Scenario::FreshPeer, other) => panic!("expected a timeout: {other:?}"),
        (_, Ok(ops)) => ops,
        (_, Err((error, _))) => panic!("{scenario:?} failed without a fault: {error}"),
    };
    let mut seen: HashMap<Op, usize> = HashMap::new();
    ops.into_iter()
        .map(|op| {
            let n = seen.entry(op).or_default();
            *n += 1;
            (op, *n)
        })
        .collect()
}

/// What a fault at `(op, nth)` must come to, where the protocol says so
/// precisely: `Some((step, action))` for an error, `None` when the fault is
/// absorbed (the lock is still acquired, or the wait times out as without
/// the fault).
fn expected(scenario: Scenario, op: Op, nth: usize, errno: Errno) -> Option<(Step, &'static str)> {
    use Op::*;
    use Scenario::*;
    let denied = errno == Errno::ACCESS;
    let create = Some((Step::Create, "create the lock file"));
    match (scenario, op, nth) {
        (Free | FreeSynced | NoParent, Create, _) => create,
        // The second create is the break marker; the third, our lock.
        (StalePeer, Create, 2) => Some((Step::Break, "create the break marker")),
        (StalePeer, Create, 3) => create,
        (FreshPeer | StalePeer, Create, 1) => create,
        (NoParent, CreateDirAll, 1) => Some((Step::Prepare, "create the parent directories")),
        // The stat of the new file is retried once, so one failure is absorbed
        // (`leftovers::a_create_whose_fstat_fails_leaves_no_empty_lock_behind`
        // fails both).
        (Free | FreeSynced | NoParent, Fstat, 1) | (StalePeer, Fstat, 6) => None,
        // The stat of our new break marker: without it the marker is
        // removed by name at the end.
        (StalePeer, Fstat, 3) => None,
        (_, Write, 1) => Some((Step::Create, "write the lock record")),
        // After the write: is the path still ours (not broken meanwhile)?
        (Free | FreeSynced | NoParent, Lstat, 1) | (StalePeer, Lstat, 6) => {
            Some((Step::Create, "stat the new lock file"))
        }
        (_, SetMtime, 1) => Some((Step::Create, "stamp the lock file")),
        (FreeSynced, Sync, 1) => Some((Step::Create, "fsync the lock file")),
        // The first look: inspect.
        (FreshPeer | StalePeer, Lstat, 1) => Some((Step::Inspect, "stat the lock file")),
        (FreshPeer | StalePeer, Fstat, 1) => Some((Step::Inspect, "stat the open lock file")),
        // An unreadable lock is a foreign lock, not an error: a stale one is
        // then broken once readable again, a fresh one waited for.
        (FreshPeer | StalePeer, OpenRead | Read, 1..=4) if denied => None,
        (FreshPeer | StalePeer, OpenRead, 1) => Some((Step::Inspect, "open the lock file")),
        (FreshPeer | StalePeer, Read, 1) => Some((Step::Inspect, "read the lock file")),
        // The look again before the break marker, and once more under it.
        (StalePeer, Lstat, 2 | 3) => Some((Step::Break, "stat the lock file")),
        (StalePeer, OpenRead, 2 | 3) => Some((Step::Break, "open the lock file")),
        (StalePeer, Fstat, 2 | 4) => Some((Step::Break, "stat the open lock file")),
        (StalePeer, Read, 2 | 3) => Some((Step::Break, "read the lock file")),
        (StalePeer, Rename, 1) => Some((Step::Break, "rename the lock file to trash")),
        // The look at what was moved to trash; on failure it is put back.
        (StalePeer, Lstat, 4) => Some((Step::Break, "stat the trash file")),
        (StalePeer, OpenRead, 4) => Some((Step::Break, "open the trash file")),
        (StalePeer, Fstat, 5) => Some((Step::Break, "stat the open trash file")),
        (StalePeer, Read, 4) => Some((Step::Break, "read the trash file")),
        (StalePeer, Unlink, 1) => Some((Step::Break, "unlink the trash file")),
        // Removing our break marker in place (looked at, unlinked): a
        // failure leaves it, to expire.
        (StalePeer, Lstat, 5) | (StalePeer, Unlink, 2) => None,
        other => panic!("no expectation for {other:?}: the protocol's calls changed"),
    }
}

/// What a fault may leave beside the lock: each is the one file of its
/// kind, and each goes the way the protocol says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leftover {
    /// The unlink of the broken lock's trash failed: the break did not
    /// complete, and the dead holder's lock stays in trash.
    BrokenLock,
    /// The removal of our break marker failed (its look or its unlink),
    /// after the break itself completed: the marker stays, to expire.
    Marker,
}

/// Checks that the files the protocol left beside `case`'s lock after a
/// fault at `(op, nth)` are exactly what that fault may leave, and removes
/// them the way the protocol does (the sweep of trash and markers older
/// than `stale`), so that nothing is left. Returns what was left.
fn left_over(case: &Case, scenario: Scenario, op: Op, nth: usize, what: &str) -> Option<Leftover> {
    let expected = match (scenario, op, nth) {
        (Scenario::StalePeer, Op::Unlink, 1) => Some(Leftover::BrokenLock),
        (Scenario::StalePeer, Op::Lstat, 5) | (Scenario::StalePeer, Op::Unlink, 2) => {
            Some(Leftover::Marker)
        }
        _ => None,
    };
    let parent = case.path.parent().unwrap();
    let left = if parent.exists() {
        trash_in(parent)
    } else {
        Vec::new()
    };
    let Some(kind) = expected else {
        assert!(left.is_empty(), "{what}: left behind: {left:?}");
        return None;
    };
    assert_eq!(left.len(), 1, "{what}: {left:?}");
    let name = &left[0];
    let file = fs::symlink_metadata(parent.join(name)).unwrap();
    match kind {
        Leftover::BrokenLock => {
            assert!(!exists(&case.path), "{what}: the lock was moved away");
            assert!(name.starts_with("state.lock.breaking."), "{what}: {name}");
            let (_, content, _) = case.peer.as_ref().unwrap();
            assert_eq!(fs::read(parent.join(name)).unwrap(), *content, "{what}");
        }
        Leftover::Marker => {
            // `<lock>.break.` and 32 hexadecimal digits, an empty file.
            let hash = name.strip_prefix("state.lock.break.").unwrap_or("");
            assert!(
                hash.len() == 32 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
                "{what}: not a break marker: {name}"
            );
            assert!(file.is_file() && file.len() == 0, "{what}: {file:?}");
        }
    }
    sweep_aged(case, name);
    assert_eq!(trash_in(parent), Vec::<String>::new(), "{what}: swept");
    Some(kind)
}

/// Ages `name` beside `case`'s lock past `stale` and has the next process
/// to take the lock sweep it, as `FileLock` does: a file a killed or failed
/// step left goes once nobody can still be using it.
fn sweep_aged(case: &Case, name: &str) {
    let stale = Duration::from_secs(60);
    set_mtime(
        &case.path.with_file_name(name),
        ago(Duration::from_secs(3600)),
    );
    let backend = FsBackend::with_vfs(&case.path, FaultVfs::new())
        .unwrap()
        .sweep_trash_older_than(stale);
    let lock = Lock::new(Arc::new(backend), Arc::new(TokioRuntime), quiet()).unwrap();
    runtime().block_on(async {
        let held = lock.acquire().await.unwrap();
        assert_eq!(held.release().await.unwrap(), Released::Released);
    });
}

fn run_matrix(scenario: Scenario) {
    let calls = calls_of(scenario);
    assert!(!calls.is_empty());
    let rt = runtime();
    let mut runs = 0;
    for &(op, nth) in &calls {
        for errno in ERRNOS {
            let what = format!("{scenario:?}: {} on {op:?} #{nth}", errno_name(errno));
            let want = expected(scenario, op, nth, errno);

            // Strict.
            let case = Case::new(scenario);
            case.vfs.fail(op, errno, nth);
            let lock = case.lock(scenario, options(scenario));
            let outcome = rt.block_on(async {
                match lock.acquire().await {
                    Ok(held) => {
                        let released = held.release().await.unwrap();
                        assert_eq!(released, Released::Released, "{what}");
                        Ok(())
                    }
                    Err(error) => Err(error),
                }
            });
            assert_eq!(case.vfs.injected(), 1, "{what}: the fault was hit");
            match (&outcome, want) {
                (
                    Err(Error::Backend(BackendError::Io {
                        step,
                        resource,
                        action,
                        source,
                    })),
                    Some((s, a)),
                ) => {
                    assert_eq!((*step, *action), (s, a), "{what}");
                    assert_eq!(resource, &case.path.display().to_string(), "{what}");
                    assert_eq!(source.raw_os_error(), Some(errno.raw_os_error()), "{what}");
                    let message = outcome.as_ref().unwrap_err().to_string();
                    assert!(message.contains(resource.as_str()), "{what}: {message}");
                    assert!(message.contains(&step.to_string()), "{what}: {message}");
                }
                (Ok(()), None) if scenario != Scenario::FreshPeer => {}
                (Err(Error::Timeout { .. }), None) if scenario == Scenario::FreshPeer => {}
                (other, want) => panic!("{what}: expected {want:?}, got {other:?}"),
            }

            // What is left on disk.
            let left = left_over(&case, scenario, op, nth, &what);
            let unlink_failed = left == Some(Leftover::BrokenLock);
            match scenario {
                Scenario::FreshPeer => {
                    assert!(case.peer_intact(), "{what}: the peer's lock changed")
                }
                Scenario::StalePeer if outcome.is_err() && !unlink_failed => {
                    // Either untouched (restored ones keep inode, content
                    // and stamp) or broken and not yet replaced.
                    assert!(
                        case.peer_intact() || !exists(&case.path),
                        "{what}: the peer's lock was changed, not broken"
                    );
                }
                Scenario::StalePeer => {}
                _ => {
                    if outcome.is_err() {
                        assert!(!exists(&case.path), "{what}: a lock was left behind");
                    }
                }
            }

            // Best effort: the task runs exactly once, unlocked on failure.
            let case = Case::new(scenario);
            case.vfs.fail(op, errno, nth);
            let lock = case.lock(scenario, options(scenario));
            let ran = Arc::new(AtomicUsize::new(0));
            let counter = Arc::clone(&ran);
            let acquired = rt.block_on(lock.with_lock(|state| async move {
                counter.fetch_add(1, Ordering::SeqCst);
                state.acquired()
            }));
            assert_eq!(ran.load(Ordering::SeqCst), 1, "{what}");
            assert_eq!(acquired, outcome.is_ok(), "{what}");
            if !acquired {
                let warned = case.warnings.all().into_iter().any(|w| {
                    w.contains("running the task without the lock")
                        && w.contains(&*case.path.to_string_lossy())
                });
                assert!(warned, "{what}: {:?}", case.warnings.all());
            }
            if outcome.is_ok() {
                assert!(!exists(&case.path), "{what}: released");
            }
            // The same steps ran, with the same fault: the same files left.
            assert_eq!(
                left_over(&case, scenario, op, nth, &what),
                left,
                "{what}: best effort"
            );
            runs += 1;
        }
    }
    println!(
        "{scenario:?}: {} calls x {} errnos = {runs} runs",
        calls.len(),
        ERRNOS.len()
    );
}

#[test]
fn every_create_step_fails_cleanly() {
    for scenario in [Scenario::Free, Scenario::FreeSynced, Scenario::NoParent] {
        run_matrix(scenario);
    }
}

#[test]
fn every_step_of_waiting_for_a_fresh_lock_fails_cleanly() {
    run_matrix(Scenario::FreshPeer);
}

#[test]
fn every_step_of_breaking_a_stale_lock_fails_cleanly() {
    run_matrix(Scenario::StalePeer);
}
