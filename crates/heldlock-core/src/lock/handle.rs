//! `Lock`: a lock resource, a runtime and options, and the driver that runs
//! the acquire machine against the backend.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::Poll;
use std::time::Duration;

use super::acquire::{Acquire, Action, Event, Outcome, Waiting};
use super::backend::{ChangeListener, Created, LockBackend};
use super::lease::{HeldLock, Lease, LockState};
use super::options::{LockOptions, Timing, Warning};
use super::probe::HostProbe;
use super::record::Inspection;
use super::stale::Now;
use crate::clock::Runtime;
use crate::error::Error;
use crate::serializer::{KeyGuard, Serializer};

/// The process-wide queue of waiters per lock resource (see
/// [`Lock::queue_in_process`]).
static LOCAL_QUEUE: LazyLock<Serializer<String>> = LazyLock::new(Serializer::new);

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
    queue_in_process: bool,
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

    /// Waits for this process's turn on the resource, up to `max_wait`.
    async fn local_turn(&self, max_wait: Duration) -> Option<KeyGuard<String>> {
        let key = self.backend.resource();
        if max_wait.is_zero() {
            return LOCAL_QUEUE.try_lock(key);
        }
        let mut turn = LOCAL_QUEUE.lock(key);
        let mut timer = self.runtime.sleep(max_wait);
        poll_fn(|cx| {
            if let Poll::Ready(guard) = Pin::new(&mut turn).poll(cx) {
                return Poll::Ready(Some(guard));
            }
            timer.as_mut().poll(cx).map(|()| None)
        })
        .await
    }

    async fn acquire_within(&self, max_wait: Duration) -> Result<HeldLock, Error> {
        let started = self.runtime.instant();
        let local = if self.queue_in_process {
            match self.local_turn(max_wait).await {
                Some(guard) => Some(guard),
                None => {
                    // Another task of this process holds or waits for it.
                    let holder = match self.backend.inspect().await? {
                        Inspection::Present(observed) => Some(observed.holder),
                        Inspection::Absent => None,
                    };
                    return Err(Error::Timeout {
                        resource: self.backend.resource(),
                        holder,
                        waited: self.runtime.instant().saturating_duration_since(started),
                    });
                }
            }
        } else {
            None
        };
        let waited = self.runtime.instant().saturating_duration_since(started);
        let record = self.record_for_this_process();
        // How to wait is decided when the lock is first found busy: the
        // uncontended path never subscribes to anything.
        let mut machine = Acquire::new(
            self.timing,
            max_wait.saturating_sub(waited),
            self.now(),
            Waiting::Notified,
        );
        let mut decided = false;
        let mut action = machine.start();
        // Subscribed before each look at a busy lock, so that a release
        // between the look and the sleep still wakes the sleep: the
        // backend's release listener, and the holder's exit watch.
        let mut released: Option<ChangeListener> = None;
        let mut exits: Vec<ChangeListener> = Vec::new();
        loop {
            let event = match action {
                Action::TryCreate => {
                    let mut record = record.clone();
                    let stamped = self.runtime.instant();
                    record.acquired_at = self.runtime.now();
                    let created = self.backend.try_create(&record).await?;
                    if created == Created::Created {
                        let lease = Lease::new(
                            Arc::clone(&self.backend),
                            Arc::clone(&self.runtime),
                            self.options.clone(),
                            self.timing,
                            record,
                            stamped,
                        );
                        return Ok(HeldLock::start(lease, local));
                    }
                    Event::Created(created)
                }
                Action::Inspect => {
                    // The new subscriptions are made while the old ones are
                    // still alive, so that shared registrations (a holder's
                    // exit watch) are reused rather than made anew.
                    let fresh_release = self.backend.listen();
                    if !decided {
                        decided = true;
                        if fresh_release.is_none() {
                            machine.set_waiting(Waiting::Backoff {
                                seed: self.runtime.jitter_seed(),
                            });
                        }
                    }
                    let mut fresh_exits = Vec::new();
                    let event = self.inspect_judging_liveness(&mut fresh_exits).await?;
                    released = fresh_release;
                    exits = fresh_exits;
                    event
                }
                Action::Break { observed, reason } => {
                    tracing::debug!(resource = %self.backend.resource(), holder = %observed.holder, ?reason, "breaking a stale lock");
                    Event::Broke(self.backend.break_if_unchanged(&observed).await?)
                }
                Action::Sleep(duration) => {
                    let mut timer = self.runtime.sleep(duration);
                    let woke = poll_fn(|cx| {
                        if released
                            .as_mut()
                            .is_some_and(|r| r.as_mut().poll(cx).is_ready())
                        {
                            return Poll::Ready(Woken::Released);
                        }
                        if exits.iter_mut().any(|w| w.as_mut().poll(cx).is_ready()) {
                            return Poll::Ready(Woken::HolderExited);
                        }
                        timer.as_mut().poll(cx).map(|()| Woken::Timer)
                    })
                    .await;
                    match woke {
                        Woken::Released => {
                            // Subscribe again before the create that follows,
                            // so that a release between that create and the
                            // next sleep still wakes the sleep.
                            released = self.backend.listen();
                            Event::Notified
                        }
                        // A dead holder's lock is still there: it must be
                        // looked at. The release listener stays until the
                        // look replaces it: it is still pending, and a
                        // backend may keep state for as long as a waiter
                        // listens (a place in a queue of waiters).
                        Woken::HolderExited | Woken::Timer => {
                            exits.clear();
                            Event::Woke
                        }
                    }
                }
                Action::Done(Outcome::TimedOut { holder, .. }) => {
                    // The machine counts from its own start; the caller
                    // waited from the call, time in the local queue included.
                    return Err(Error::Timeout {
                        resource: self.backend.resource(),
                        holder,
                        waited: self.runtime.instant().saturating_duration_since(started),
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

/// What ended a waiter's sleep.
enum Woken {
    Released,
    HolderExited,
    Timer,
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("resource", &self.backend.resource())
            .field("timing", &self.timing)
            .finish()
    }
}
