//! `FileLock`: the held lock on one lock file, for any runtime.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use heldlock_core::{Error, HeldLock, Inspection, Lock, LockOptions, LockState, Runtime, Timing};

use crate::backend::FsBackend;
use crate::host::LocalHost;

/// A held lock on one lock file: created with `O_EXCL`, kept fresh by a
/// heartbeat while held, broken safely once its holder is judged dead, and
/// removed only while it is still ours.
///
/// Waiting is cheap and prompt: a waiter is woken by the release itself
/// (inotify on the lock's directory; its `poll` is only a safety net), by the
/// exit of a same-host holder (a pidfd), and waiters of one process queue
/// among themselves in call order so that only one of them touches the file
/// system. A holder on this host, boot and pid namespace that died is broken
/// at once, without waiting for `stale`. (Inotify, pidfds and the pid verdict
/// are Linux's; elsewhere a waiter polls and a dead holder's lock is broken
/// once stale.)
///
/// `R` is the runtime that gives the lock its clock and runs its heartbeat;
/// the adapter crates name it for you (`heldlock_tokio::FileLock` is
/// `FileLock<TokioRuntime>`).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use heldlock_core::{LockOptions, ManualClock};
/// use heldlock_fs::FileLock;
///
/// # futures::executor::block_on(async {
/// let dir = tempfile::tempdir()?;
/// let lock = FileLock::<ManualClock>::new(dir.path().join("db.lock"), LockOptions::new(Duration::from_secs(30)))?;
/// let held = lock.acquire().await?;
/// assert!(held.refresh().await?);
/// held.release().await?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct FileLock<R> {
    lock: Lock,
    backend: Arc<FsBackend>,
    path: PathBuf,
    runtime: PhantomData<fn() -> R>,
}

impl<R: Runtime + Default> FileLock<R> {
    /// A lock on the file at `path` (created on acquire, with its missing
    /// parent directories).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidResource`] for an empty path or one that names no file;
    /// [`Error::Options`] for invalid options.
    pub fn new(path: impl AsRef<Path>, options: LockOptions) -> Result<Self, Error> {
        Self::with_runtime(path, options, R::default())
    }
}

impl<R: Runtime> FileLock<R> {
    /// As [`new`](Self::new), with an explicit runtime value.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn with_runtime(
        path: impl AsRef<Path>,
        options: LockOptions,
        runtime: R,
    ) -> Result<Self, Error> {
        let path = path.as_ref().to_path_buf();
        let timing = options.validate()?;
        // Asked of the lock's directory, where the lock file is created: one
        // `statfs`, where the lock path itself is mostly absent (a failed
        // call first) or could be a symbolic link, which the backend never
        // follows but `statfs` would.
        let network = crate::is_network_fs(match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        });
        let backend = Arc::new(
            FsBackend::new(&path)?
                .with_lock_timing(&timing)
                .kernel_locks(!network),
        );
        // On a network file system a system call can hang for as long as its
        // server is gone: the steps run on a worker thread, so that the
        // lock's deadlines (`max_wait`, the lease's expiry) hold.
        let dyn_backend: Arc<dyn heldlock_core::LockBackend> = if network {
            Arc::new(crate::Offload::new(Arc::clone(&backend)))
        } else {
            backend.clone()
        };
        let lock = Lock::new(dyn_backend, Arc::new(runtime), options)?
            // Waiters of this process take turns among themselves first: only
            // one of them polls the file system, and they get it in call order.
            .queue_in_process(true)
            // Records carry host, boot, pid namespace and start time, and a
            // same-host waiter breaks a dead holder's lock at once.
            .with_host_probe(Arc::new(LocalHost::new()));
        Ok(FileLock {
            lock,
            backend,
            path,
            runtime: PhantomData,
        })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The validated timings.
    pub fn timing(&self) -> Timing {
        self.lock.timing()
    }

    /// The runtime-agnostic lock underneath.
    pub fn as_lock(&self) -> &Lock {
        &self.lock
    }

    /// Waits up to `max_wait` for the lock; see [`Lock::acquire`].
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] naming the path, the holder and the time waited;
    /// [`Error::Backend`] when a file-system step failed.
    pub async fn acquire(&self) -> Result<HeldLock, Error> {
        self.lock.acquire().await
    }

    /// Tries once without waiting; see [`Lock::try_acquire`].
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when a file-system step failed.
    pub async fn try_acquire(&self) -> Result<Option<HeldLock>, Error> {
        self.lock.try_acquire().await
    }

    /// Runs `task` under the lock, or unlocked (best effort) when the lock
    /// cannot be had; see [`Lock::with_lock`].
    pub async fn with_lock<F, Fut, T>(&self, task: F) -> T
    where
        F: FnOnce(LockState) -> Fut,
        Fut: Future<Output = T>,
    {
        self.lock.with_lock(task).await
    }

    /// A new descriptor of `held`'s lock file, without close-on-exec, for a
    /// child process to inherit: the exclusive kernel lock the holder took
    /// on the file lives while any process keeps such a descriptor open, and
    /// a contender on this host treats it as proof of life. So a command
    /// run under the lock keeps it held even if this process dies first
    /// (what `heldlock run` does, and what `flock(1)` users expect). Close
    /// it in this process once the child has started.
    ///
    /// # Errors
    ///
    /// [`std::io::ErrorKind::NotFound`] when `held` is not a lock this
    /// `FileLock` holds (released, or another lock's); the `dup` error
    /// otherwise.
    pub fn inheritable_descriptor(&self, held: &HeldLock) -> std::io::Result<OwnedFd> {
        self.backend.inheritable_descriptor(held.owner())
    }

    /// Looks at the lock file without touching it.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the file could not be read.
    pub async fn inspect(&self) -> Result<Inspection, Error> {
        self.lock.inspect().await
    }
}

impl<R> Clone for FileLock<R> {
    fn clone(&self) -> Self {
        FileLock {
            lock: self.lock.clone(),
            backend: Arc::clone(&self.backend),
            path: self.path.clone(),
            runtime: PhantomData,
        }
    }
}

impl<R> fmt::Debug for FileLock<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileLock")
            .field("path", &self.path)
            .field("timing", &self.lock.timing())
            .finish()
    }
}
