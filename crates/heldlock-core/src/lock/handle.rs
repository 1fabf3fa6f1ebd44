//! `Lock`: a lock resource, a runtime and options, and the calls users
//! make on it; `driver.rs` runs the acquire machine behind them.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::backend::LockBackend;
use super::lease::{HeldLock, LockState};
use super::options::{LockOptions, Timing, Warning};
use super::probe::HostProbe;
use super::record::Inspection;
use super::stale::Now;
use crate::clock::Runtime;
use crate::error::Error;

/// A held lock on one resource: a backend, the runtime that gives it time and
/// runs its heartbeat, and validated options.
///
/// Runtime adapters wrap this type (`heldlock_tokio::FileLock`); use it
/// directly to run a custom [`LockBackend`].
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use heldlock_core::{Lock, LockOptions, ManualClock, MemoryBackend};
///
/// # futures::executor::block_on(async {
/// let clock = ManualClock::new();
/// let lock = Lock::new(
///     Arc::new(MemoryBackend::new("demo")),
///     Arc::new(clock.clone()),
///     LockOptions::new(Duration::from_secs(30)),
/// )?;
/// let held = lock.acquire().await?;
/// assert!(held.refresh().await?);
/// held.release().await?;
/// # Ok::<(), heldlock_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct Lock {
    pub(super) backend: Arc<dyn LockBackend>,
    pub(super) runtime: Arc<dyn Runtime>,
    pub(super) options: LockOptions,
    pub(super) timing: Timing,
    pub(super) probe: Option<Arc<dyn HostProbe>>,
    pub(super) queue_in_process: bool,
}

impl Lock {
    /// A lock on `backend`'s resource.
    ///
    /// # Errors
    ///
    /// [`Error::Options`] when an option is invalid.
    pub fn new(
        backend: Arc<dyn LockBackend>,
        runtime: Arc<dyn Runtime>,
        options: LockOptions,
    ) -> Result<Self, Error> {
        let timing = options.validate()?;
        Ok(Lock {
            backend,
            runtime,
            options,
            timing,
            probe: None,
            queue_in_process: false,
        })
    }

    /// Lets `probe` identify our process in the records we write and judge
    /// whether a holder on this host is dead; see [`HostProbe`].
    #[must_use]
    pub fn with_host_probe(mut self, probe: Arc<dyn HostProbe>) -> Self {
        self.probe = Some(probe);
        self
    }

    /// Whether the waiters of this process for the same resource first queue
    /// among themselves, in call order, so that only one of them at a time
    /// touches the backend (default `false`; `FileLock` turns it on). The
    /// queue is keyed by [`LockBackend::resource`] and process-wide.
    #[must_use]
    pub fn queue_in_process(mut self, enabled: bool) -> Self {
        self.queue_in_process = enabled;
        self
    }

    /// The validated timings.
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn LockBackend> {
        &self.backend
    }

    /// Waits up to `max_wait` for the lock, breaking it if its holder is
    /// judged dead, and returns the guard.
    ///
    /// A backend that stops answering (a network file system whose server
    /// went away) cannot keep the caller past `max_wait`: each backend step
    /// is raced against the deadline, and a step begun in the last `poll`
    /// before it is given `poll` from its start. A `try_create` still
    /// running when the wait ends is not dropped: it runs to its end on the
    /// runtime, and the lock, if it created one, is released at once. The
    /// same holds when the caller drops this future. (A backend whose steps
    /// block the thread in their poll cannot be raced; see `heldlock_fs`'s
    /// `Offload`.)
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] naming the resource, the holder and the time waited
    /// when the lock stayed busy or the backend did not answer in time;
    /// [`Error::Backend`] when a step failed.
    ///
    /// # Cancel safety
    ///
    /// Dropping this future (a `select!` whose other branch won, a timeout
    /// around it) never leaves a lock that nobody holds, wherever it stopped:
    ///
    /// * before its first poll, in this process's queue
    ///   ([`queue_in_process`](Self::queue_in_process)), while it looks at a
    ///   busy lock, or while it sleeps: nothing is left behind (its place in
    ///   the queue and its subscriptions go with it);
    /// * while its `try_create` has not answered: the create runs to its end
    ///   on the runtime, and a lock it creates then is released at once; no
    ///   heartbeat starts;
    /// * while it breaks a stale lock: the break runs to its end on the
    ///   runtime (one stopped half-way could leave a marker or trash behind),
    ///   and nothing is created after it.
    pub async fn acquire(&self) -> Result<HeldLock, Error> {
        let grace = self.timing.poll.min(self.timing.max_wait);
        self.acquire_within(self.timing.max_wait, grace).await
    }

    /// Tries once (breaking a stale lock if that is what stands in the way),
    /// never waiting: `Ok(None)` when the lock is busy, or when the backend
    /// did not answer within `max_wait`.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when a step failed.
    pub async fn try_acquire(&self) -> Result<Option<HeldLock>, Error> {
        // No wait, but a backend step that does not complete at once (an
        // asynchronous backend) still needs time: up to `max_wait`.
        match self
            .acquire_within(Duration::ZERO, self.timing.max_wait)
            .await
        {
            Ok(held) => Ok(Some(held)),
            Err(Error::Timeout { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Runs `task` under the lock, with the reference's best-effort semantics:
    /// when the lock cannot be had (timeout, or a backend failure such as a lock
    /// directory that cannot be made) the task still runs, unlocked, with
    /// `state.acquired() == false`, and a warning is reported. The lock is
    /// released when the task ends, also if it panics.
    pub async fn with_lock<F, Fut, T>(&self, task: F) -> T
    where
        F: FnOnce(LockState) -> Fut,
        Fut: Future<Output = T>,
    {
        match self.acquire().await {
            Ok(held) => {
                let value = task(held.state()).await;
                if let Err(error) = held.release().await {
                    self.warn(format!("release after the task failed: {error}"));
                }
                value
            }
            Err(error) => {
                self.warn(format!("running the task without the lock: {error}"));
                task(LockState::unlocked()).await
            }
        }
    }

    /// Looks at the lock without touching it.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the backend could not look.
    pub async fn inspect(&self) -> Result<Inspection, Error> {
        Ok(self.backend.inspect().await?)
    }

    pub(super) fn now(&self) -> Now {
        Now {
            wall: self.runtime.now(),
            instant: self.runtime.instant(),
        }
    }

    pub(super) fn warn(&self, message: String) {
        self.options.warn(Warning {
            resource: self.backend.resource(),
            message,
        });
    }
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("resource", &self.backend.resource())
            .field("timing", &self.timing)
            .finish()
    }
}
