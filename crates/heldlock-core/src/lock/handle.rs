//! `Lock`: a lock resource, a runtime and options, and the driver that runs
//! the acquire machine against the backend.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::acquire::{Acquire, Action, Event, Outcome};
use super::backend::LockBackend;
use super::lease::{HeldLock, Lease, LockState};
use super::options::{LockOptions, Timing, Warning};
use super::record::{Inspection, LockRecord};
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
    backend: Arc<dyn LockBackend>,
    runtime: Arc<dyn Runtime>,
    options: LockOptions,
    timing: Timing,
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
        })
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
    /// # Errors
    ///
    /// [`Error::Timeout`] naming the resource, the holder and the time waited
    /// when the lock stayed busy; [`Error::Backend`] when a step failed.
    pub async fn acquire(&self) -> Result<HeldLock, Error> {
        self.acquire_within(self.timing.max_wait).await
    }

    /// Tries once (breaking a stale lock if that is what stands in the way),
    /// never waiting: `Ok(None)` when the lock is busy.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when a step failed.
    pub async fn try_acquire(&self) -> Result<Option<HeldLock>, Error> {
        match self.acquire_within(Duration::ZERO).await {
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

    fn now(&self) -> Now {
        Now {
            wall: self.runtime.now(),
            instant: self.runtime.instant(),
        }
    }

    fn warn(&self, message: String) {
        self.options.warn(Warning {
            resource: self.backend.resource(),
            message,
        });
    }

    async fn acquire_within(&self, max_wait: Duration) -> Result<HeldLock, Error> {
        let record = LockRecord::for_this_process(self.runtime.now());
        let mut machine = Acquire::new(self.timing, max_wait, self.now());
        let mut action = machine.start();
        loop {
            let event = match action {
                Action::TryCreate => {
                    let mut record = record.clone();
                    record.acquired_at = self.runtime.now();
                    let created = self.backend.try_create(&record).await?;
                    if created == super::backend::Created::Created {
                        let lease = Lease::new(
                            Arc::clone(&self.backend),
                            Arc::clone(&self.runtime),
                            self.options.clone(),
                            self.timing,
                            record,
                        );
                        return Ok(HeldLock::start(lease));
                    }
                    Event::Created(created)
                }
                Action::Inspect => Event::Inspected(self.backend.inspect().await?),
                Action::Break { observed, reason } => {
                    tracing::debug!(resource = %self.backend.resource(), holder = %observed.holder, ?reason, "breaking a stale lock");
                    Event::Broke(self.backend.break_if_unchanged(&observed).await?)
                }
                Action::Sleep(duration) => {
                    self.runtime.sleep(duration).await;
                    Event::Woke
                }
                Action::Done(Outcome::TimedOut { holder, waited }) => {
                    return Err(Error::Timeout {
                        resource: self.backend.resource(),
                        holder,
                        waited,
                    });
                }
                Action::Done(Outcome::Acquired) => {
                    unreachable!("Acquired is returned right after Created")
                }
            };
            action = machine.next(event, self.now());
        }
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
