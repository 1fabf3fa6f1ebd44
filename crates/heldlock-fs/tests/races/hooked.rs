//! The hooked `Vfs` every race here is staged with: the real file system,
//! with a hook run before (or a failure in place of) a chosen call.

use std::fs;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use heldlock_core::{Created, LockBackend, Observed};
use heldlock_fs::{FsBackend, Meta, RealFile, RealFs, Vfs, VfsFile};

use crate::support::*;

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
pub(crate) struct Hooked {
    plan: Arc<Mutex<Plan>>,
}

impl std::fmt::Debug for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hooked")
    }
}

impl Hooked {
    /// Runs `action` just before the `nth` (1-based) next call of `op`.
    pub(crate) fn before(
        &self,
        op: &'static str,
        nth: usize,
        action: impl FnOnce() + Send + 'static,
    ) {
        let hook = (op, nth - 1, Hook::Run(Box::new(action)));
        self.plan.lock().unwrap().hooks.push(hook);
    }

    /// Makes the `nth` next call of `op` fail with `kind` instead of running.
    pub(crate) fn fail(&self, op: &'static str, nth: usize, kind: io::ErrorKind) {
        let hook = (op, nth - 1, Hook::Fail(kind));
        self.plan.lock().unwrap().hooks.push(hook);
    }

    pub(crate) fn log(&self) -> Vec<&'static str> {
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
pub(crate) struct HookedFile {
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
pub(crate) const STALE_FOREIGN: &[u8] = b"4242 0f8fad5b";

pub(crate) fn hooked(path: &Path) -> (FsBackend<Hooked>, Hooked) {
    let vfs = Hooked::default();
    (FsBackend::with_vfs(path, vfs.clone()).unwrap(), vfs)
}

/// A foreign lock (the start of a record, left by a holder that crashed
/// mid-write) stamped long ago, a hooked backend on it, and the observation
/// a breaker would break it with.
pub(crate) fn stale_foreign_lock() -> (
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
