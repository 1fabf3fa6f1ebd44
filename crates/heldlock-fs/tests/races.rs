//! The protocol's safeguards against a contender acting *between* two of its
//! system calls, driven by a `Vfs` that runs a hook before a chosen call.
#![allow(clippy::unwrap_used)]

mod support;

use std::fs;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use heldlock_core::{
    BackendError, Broke, Created, Holder, LockBackend, Observed, Refreshed, Released, Step,
};
use heldlock_fs::{FsBackend, Meta, RealFile, RealFs, Vfs, VfsFile, record};
use support::*;

type Action = Box<dyn FnOnce() + Send>;

enum Hook {
    Run(Action),
    Fail(io::ErrorKind),
}

#[derive(Default)]
struct Plan {
    /// (operation, calls of it still to let through, what to do then)
    hooks: Vec<(&'static str, usize, Hook)>,
    log: Vec<&'static str>,
}

/// The real file system, with hooks that run before (or replace) the n-th
/// call of an operation. Its futures are ready at once, but it does not
/// claim `BLOCKING_OK`.
#[derive(Clone, Default)]
struct Hooked {
    plan: Arc<Mutex<Plan>>,
}

impl std::fmt::Debug for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hooked")
    }
}

impl Hooked {
    /// Runs `action` just before the `nth` (1-based) next call of `op`.
    fn before(&self, op: &'static str, nth: usize, action: impl FnOnce() + Send + 'static) {
        let hook = (op, nth - 1, Hook::Run(Box::new(action)));
        self.plan.lock().unwrap().hooks.push(hook);
    }

    /// Makes the `nth` next call of `op` fail with `kind` instead of running.
    fn fail(&self, op: &'static str, nth: usize, kind: io::ErrorKind) {
        let hook = (op, nth - 1, Hook::Fail(kind));
        self.plan.lock().unwrap().hooks.push(hook);
    }

    fn log(&self) -> Vec<&'static str> {
        self.plan.lock().unwrap().log.clone()
    }

    fn fire(&self, op: &'static str) -> io::Result<()> {
        let due = {
            let mut plan = self.plan.lock().unwrap();
            plan.log.push(op);
            let mut due = None;
            let mut i = 0;
            while i < plan.hooks.len() {
                if plan.hooks[i].0 != op {
                    i += 1;
                } else if plan.hooks[i].1 > 0 {
                    plan.hooks[i].1 -= 1;
                    i += 1;
                } else if due.is_none() {
                    due = Some(plan.hooks.remove(i).2);
                } else {
                    i += 1;
                }
            }
            due
        };
        match due {
            Some(Hook::Run(action)) => {
                action();
                Ok(())
            }
            Some(Hook::Fail(kind)) => Err(io::Error::new(kind, format!("injected {op} failure"))),
            None => Ok(()),
        }
    }

    fn op<T: Send>(
        &self,
        name: &'static str,
        call: impl Future<Output = io::Result<T>> + Send,
    ) -> impl Future<Output = io::Result<T>> + Send {
        let fired = self.fire(name);
        async move {
            fired?;
            call.await
        }
    }
}

#[derive(Debug)]
struct HookedFile {
    inner: RealFile,
    hooks: Hooked,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Plan")
    }
}

impl Vfs for Hooked {
    type File = HookedFile;

    fn create_dir_all(&self, path: &Path) -> impl Future<Output = io::Result<()>> + Send {
        self.op("create_dir_all", RealFs.create_dir_all(path))
    }
    fn create_new(&self, path: &Path) -> impl Future<Output = io::Result<HookedFile>> + Send {
        let hooks = self.clone();
        let open = self.op("create_new", RealFs.create_new(path));
        async move {
            Ok(HookedFile {
                inner: open.await?,
                hooks,
            })
        }
    }
    fn open_read(&self, path: &Path) -> impl Future<Output = io::Result<HookedFile>> + Send {
        let hooks = self.clone();
        let open = self.op("open_read", RealFs.open_read(path));
        async move {
            Ok(HookedFile {
                inner: open.await?,
                hooks,
            })
        }
    }
    fn lstat(&self, path: &Path) -> impl Future<Output = io::Result<Meta>> + Send {
        self.op("lstat", RealFs.lstat(path))
    }
    fn rename(&self, from: &Path, to: &Path) -> impl Future<Output = io::Result<()>> + Send {
        self.op("rename", RealFs.rename(from, to))
    }
    fn link(&self, from: &Path, to: &Path) -> impl Future<Output = io::Result<()>> + Send {
        self.op("link", RealFs.link(from, to))
    }
    fn unlink(&self, path: &Path) -> impl Future<Output = io::Result<()>> + Send {
        self.op("unlink", RealFs.unlink(path))
    }
}

// The hooks must run before the real call, so each real call is made lazily
// inside the returned future, after `fire`.
impl VfsFile for HookedFile {
    fn write_all(&self, bytes: &[u8]) -> impl Future<Output = io::Result<()>> + Send {
        let fired = self.hooks.fire("write_all");
        async move {
            fired?;
            self.inner.write_all(bytes).await
        }
    }
    fn read_capped(&self, max: usize) -> impl Future<Output = io::Result<Vec<u8>>> + Send {
        let fired = self.hooks.fire("read_capped");
        async move {
            fired?;
            self.inner.read_capped(max).await
        }
    }
    fn fstat(&self) -> impl Future<Output = io::Result<Meta>> + Send {
        let fired = self.hooks.fire("fstat");
        async move {
            fired?;
            self.inner.fstat().await
        }
    }
    fn set_mtime(&self, mtime: SystemTime) -> impl Future<Output = io::Result<()>> + Send {
        let fired = self.hooks.fire("set_mtime");
        async move {
            fired?;
            self.inner.set_mtime(mtime).await
        }
    }
    fn sync(&self) -> impl Future<Output = io::Result<()>> + Send {
        let fired = self.hooks.fire("sync");
        async move {
            fired?;
            self.inner.sync().await
        }
    }
    fn lock_exclusive(&self) -> impl Future<Output = io::Result<bool>> + Send {
        self.inner.lock_exclusive()
    }
    fn kernel_held(&self) -> impl Future<Output = io::Result<bool>> + Send {
        self.inner.kernel_held()
    }
    fn unlock(&self) -> io::Result<()> {
        self.inner.unlock()
    }
}

/// What [`stale_foreign_lock`] holds.
const STALE_FOREIGN: &[u8] = b"4242 0f8fad5b";

fn hooked(path: &Path) -> (FsBackend<Hooked>, Hooked) {
    let vfs = Hooked::default();
    (FsBackend::with_vfs(path, vfs.clone()).unwrap(), vfs)
}

/// A foreign lock (the start of a record, left by a holder that crashed
/// mid-write) stamped long ago, a hooked backend on it, and the observation
/// a breaker would break it with.
fn stale_foreign_lock() -> (
    tempfile::TempDir,
    PathBuf,
    FsBackend<Hooked>,
    Hooked,
    Observed,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let (backend, vfs) = hooked(&path);
    fs::write(&path, STALE_FOREIGN).unwrap();
    set_mtime(&path, long_ago());
    let observed = observe(&backend);
    assert!(observed.breakable);
    (dir, path, backend, vfs, observed)
}

/// `op` fires the hook when the call is made and runs the real call when it
/// is polled; this checks that the hook really comes first.
#[test]
fn hooks_run_before_the_call_they_precede() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let (backend, vfs) = hooked(&path);
    let probe = path.clone();
    vfs.before("create_new", 1, move || {
        fs::write(&probe, b"first").unwrap()
    });
    assert_eq!(
        block_on(backend.try_create(&rec())).unwrap(),
        Created::Exists
    );
    assert_eq!(fs::read(&path).unwrap(), b"first");
}

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

// ---------------------------------------------------------------- try_create

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

// ---------------------------------------------------------------- inspect

#[test]
fn an_unreadable_lock_is_foreign_not_an_error_and_never_broken() {
    for op in ["open_read", "read_capped"] {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(dir.path());
        let content = record::encode(&rec());
        fs::write(&path, &content).unwrap();
        set_mtime(&path, long_ago());
        let (backend, vfs) = hooked(&path);
        vfs.fail(op, 1, io::ErrorKind::PermissionDenied);
        let observed = observe(&backend);
        assert_eq!(
            observed.holder,
            Holder::Foreign {
                summary: "<an unreadable file>".to_owned()
            },
            "{op}"
        );
        assert_eq!(observed.refreshed_at, mtime(&path));
        // It cannot be told from somebody's data: honoured, never broken,
        // however old, and refused before anything is touched.
        assert!(!observed.breakable, "{op}");
        let before = vfs.log().len();
        let err = block_on(backend.break_if_unchanged(&observed)).unwrap_err();
        assert!(
            matches!(
                err,
                BackendError::NotALock {
                    step: Step::Break,
                    ..
                }
            ),
            "{op}: {err}"
        );
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        assert_eq!(vfs.log()[before..], [] as [&str; 0], "{op}");
        assert_eq!(fs::read(&path).unwrap(), content.as_bytes(), "{op}");
        assert_eq!(mtime(&path), long_ago(), "{op}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "{op}");
    }
}

#[test]
fn inspect_never_opens_a_symlink_fifo_or_directory() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("link.lock");
    std::os::unix::fs::symlink(dir.path().join("target"), &link).unwrap();
    let fifo = dir.path().join("fifo.lock");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
    )
    .unwrap();
    let sub = dir.path().join("dir.lock");
    fs::create_dir(&sub).unwrap();
    for (path, what) in [
        (link, "a symbolic link"),
        (fifo, "a FIFO, socket or device"),
        (sub, "a directory"),
    ] {
        let (backend, vfs) = hooked(&path);
        match block_on(backend.inspect()) {
            Err(BackendError::NotALock {
                step: Step::Inspect,
                what: got,
                ..
            }) => assert_eq!(got, what),
            other => panic!("{}: expected NotALock, got {other:?}", path.display()),
        }
        assert_eq!(vfs.log(), ["lstat"], "{}", path.display());
    }
}

#[test]
fn an_inspect_failure_is_an_inspect_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    fs::write(&path, b"x").unwrap();
    let (backend, vfs) = hooked(&path);
    vfs.fail("read_capped", 1, io::ErrorKind::Other);
    let err = block_on(backend.inspect()).unwrap_err();
    assert_eq!(err.step(), Step::Inspect);
    assert!(err.to_string().contains("read the lock file"), "{err}");
}

// ---------------------------------------------------------------- refresh

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

// ---------------------------------------------------------------- break

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

// ---------------------------------------------------------------- release

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
