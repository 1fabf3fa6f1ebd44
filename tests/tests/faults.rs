//! File-system faults on every protocol step, through the full lock
//! (`heldlock_core::Lock` over `FsBackend` over a fault-injecting `Vfs`),
//! and real ones where this machine allows (a full tmpfs, a read-only
//! mount; `EACCES` on a directory for real is in `hostile.rs`, run as the
//! user `nobody`).
//!
//! For each scenario the fault-free run is recorded first; then every call
//! it made is failed in turn, once, with each of `EIO`, `ENOSPC`, `EACCES`
//! and `EROFS`. Whatever the call, the strict `acquire()` either absorbs the
//! fault (and still acquires) or returns `Error::Backend(BackendError::Io)`
//! naming the lock path, the step and the action, with the injected errno;
//! best effort (`with_lock`) runs the task exactly once, unlocked with a
//! warning when the strict call failed; nothing of a peer is changed, no
//! half-made lock of ours and no trash is left (except where listed).
#![allow(clippy::unwrap_used)]

mod support;
mod vfs_faults;

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use heldlock_core::{BackendError, Error, Lock, LockOptions, Released, Step};
use heldlock_fs::FsBackend;
use heldlock_tokio::TokioRuntime;
use rustix::io::Errno;
use support::*;
use vfs_faults::{ERRNOS, FaultVfs, Op, Warnings, errno_name, lock_on};

/// Whether anything (even a dangling link) is at `path`.
fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    /// Nothing at the lock path.
    Free,
    /// Nothing at the lock path, and `fsync` asked for.
    FreeSynced,
    /// The lock's directory does not exist yet.
    NoParent,
    /// A peer's fresh lock: waited for, never touched.
    FreshPeer,
    /// A peer's stale lock: broken, then ours created.
    StalePeer,
}

struct Case {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    path: PathBuf,
    vfs: FaultVfs,
    warnings: Warnings,
    /// The peer's lock as it was: (inode, content, mtime).
    peer: Option<(u64, Vec<u8>, SystemTime)>,
}

impl Case {
    fn new(scenario: Scenario) -> Self {
        let (dir, mut path) = lock_path();
        if scenario == Scenario::NoParent {
            path = dir.path().join("sub").join("state.lock");
        }
        let peer_at = match scenario {
            Scenario::FreshPeer => Some(SystemTime::now()),
            Scenario::StalePeer => Some(ago(Duration::from_secs(60))),
            _ => None,
        };
        let peer = peer_at.map(|at| {
            let content = write_reference_lock(&path, 4242, OTHER_OWNER, at);
            set_mtime(&path, at);
            let meta = fs::metadata(&path).unwrap();
            (meta.ino(), content.into_bytes(), mtime(&path))
        });
        Case {
            dir: dir.path().to_path_buf(),
            _dir: dir,
            path,
            vfs: FaultVfs::new(),
            warnings: Warnings::default(),
            peer,
        }
    }

    fn lock(&self, scenario: Scenario, options: LockOptions) -> heldlock_core::Lock {
        let options = self.warnings.hook(options);
        lock_on(
            &self.path,
            &self.vfs,
            TokioRuntime,
            options,
            scenario == Scenario::FreeSynced,
        )
    }

    /// Whether the peer's lock is still exactly as it was.
    fn peer_intact(&self) -> bool {
        let Some((ino, content, at)) = &self.peer else {
            return false;
        };
        fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == *ino)
            && fs::read(&self.path).is_ok_and(|c| c == *content)
            && mtime(&self.path) == *at
    }
}

fn options(scenario: Scenario) -> LockOptions {
    let options = LockOptions::new(Duration::from_secs(60));
    if scenario == Scenario::FreshPeer {
        options.max_wait(Duration::from_millis(150))
    } else {
        options.max_wait(Duration::from_secs(10))
    }
}

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
        // (`a_create_whose_fstat_fails_leaves_no_empty_lock_behind` fails both).
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

// ---------------------------------------------------------------- holding

/// Options for a held lock whose heartbeat stays out of the way (20 s).
fn quiet() -> LockOptions {
    LockOptions::new(Duration::from_secs(60))
}

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
                // `hostile::a_holder_that_cannot_reopen_its_own_lock_still_releases_it`.
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

// ---------------------------------------------------------------- real faults

/// A tmpfs mounted for one test, unmounted on drop.
struct Mount {
    path: PathBuf,
}

impl Mount {
    /// `None` (after printing why) where mounting is not permitted.
    fn tmpfs(test: &str, path: &Path, size: &str) -> Option<Mount> {
        fs::create_dir_all(path).unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output();
        match output {
            Ok(output) if output.status.success() => Some(Mount {
                path: path.to_path_buf(),
            }),
            Ok(output) => {
                support::skip(
                    test,
                    &format!(
                        "cannot mount a tmpfs ({}): {}",
                        output.status,
                        String::from_utf8_lossy(&output.stderr).trim()
                    ),
                );
                None
            }
            Err(error) => {
                support::skip(test, &format!("no mount command ({error})"));
                None
            }
        }
    }

    fn remount(&self, options: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(status.success(), "remount {options}");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

#[test]
fn a_full_file_system_fails_the_create_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = Mount::tmpfs(
        "a_full_file_system_fails_the_create_and_leaves_nothing",
        &dir.path().join("mnt"),
        "64k",
    ) else {
        return;
    };
    let path = mount.path.join("state.lock");
    let filler = mount.path.join("filler");
    let mut file = fs::File::create(&filler).unwrap();
    let chunk = [0u8; 4096];
    let full = loop {
        match file.write_all(&chunk) {
            Ok(()) => {}
            Err(e) => break e,
        }
    };
    drop(file);
    assert_eq!(full.raw_os_error(), Some(Errno::NOSPC.raw_os_error()));

    let warnings = Warnings::default();
    let lock = heldlock::blocking::FileLock::new(
        &path,
        warnings.hook(LockOptions::new(Duration::from_secs(5))),
    )
    .unwrap();
    match lock.acquire() {
        Err(Error::Backend(BackendError::Io {
            step,
            resource,
            action,
            source,
        })) => {
            assert_eq!(step, Step::Create);
            assert_eq!(action, "write the lock record");
            assert_eq!(resource, path.display().to_string());
            assert_eq!(source.raw_os_error(), Some(Errno::NOSPC.raw_os_error()));
        }
        other => panic!("expected ENOSPC on create, got {other:?}"),
    }
    assert!(!exists(&path), "the half-made lock was removed");
    assert!(trash_in(&mount.path).is_empty());
    assert!(!lock.with_lock(|state| state.acquired()));
    assert!(warnings.any("running the task without the lock"));

    fs::remove_file(&filler).unwrap();
    let held = lock.acquire().unwrap();
    assert_eq!(held.release().unwrap(), Released::Released);
}

#[test]
fn a_read_only_file_system_fails_create_and_break_with_erofs() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = Mount::tmpfs(
        "a_read_only_file_system_fails_create_and_break_with_erofs",
        &dir.path().join("mnt"),
        "1m",
    ) else {
        return;
    };
    let free = mount.path.join("free.lock");
    let stale = mount.path.join("stale.lock");
    let content = write_reference_lock(&stale, 4242, OTHER_OWNER, ago(Duration::from_secs(60)));
    set_mtime(&stale, ago(Duration::from_secs(60)));
    let before = (fs::metadata(&stale).unwrap().ino(), mtime(&stale));
    mount.remount("ro");

    let erofs = Some(Errno::ROFS.raw_os_error());
    let options = LockOptions::new(Duration::from_secs(5));
    for (path, step, action) in [
        (&free, Step::Create, "create the lock file"),
        // Breaking starts with the break marker beside the stale lock, which
        // a read-only file system refuses first.
        (&stale, Step::Break, "create the break marker"),
    ] {
        let lock = heldlock::blocking::FileLock::new(path, options.clone()).unwrap();
        match lock.acquire() {
            Err(Error::Backend(BackendError::Io {
                step: s,
                action: a,
                source,
                ..
            })) => {
                assert_eq!((s, a), (step, action), "{}", path.display());
                assert_eq!(source.raw_os_error(), erofs);
            }
            other => panic!("expected EROFS, got {other:?}"),
        }
        assert!(!lock.with_lock(|state| state.acquired()));
    }
    assert!(!exists(&free));
    assert_eq!(fs::read_to_string(&stale).unwrap(), content);
    assert_eq!((fs::metadata(&stale).unwrap().ino(), mtime(&stale)), before);
    mount.remount("rw");
    let lock = heldlock::blocking::FileLock::new(&stale, options).unwrap();
    assert_eq!(
        lock.acquire().unwrap().release().unwrap(),
        Released::Released
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

/// A holder that dies between moving its lock to trash and unlinking it
/// (simulated: the unlink never happens) leaves `<lock>.releasing.<uuid>`
/// behind. The lock itself is free, but nothing ever removes that file; the
/// chaos runs hit this now and then with real `SIGKILL`s.
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
