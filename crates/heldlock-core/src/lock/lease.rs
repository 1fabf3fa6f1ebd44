//! A held lock: the state a holder shares with its heartbeat, the guard, and
//! the view a best-effort task gets.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use event_listener::Event;

use super::backend::{LockBackend, Refreshed, Released};
use super::heartbeat::{Beat, Heartbeat};
use super::options::{LockOptions, Timing, Warning};
use super::record::{LockRecord, OwnerId};
use crate::clock::Runtime;
use crate::error::Error;
use crate::serializer::KeyGuard;

/// A flag that is set once and can be awaited.
#[derive(Debug, Default)]
struct Signal {
    set: AtomicBool,
    event: Event,
}

impl Signal {
    fn set(&self) -> bool {
        let first = !self.set.swap(true, Ordering::SeqCst);
        self.event.notify(usize::MAX);
        first
    }

    fn is_set(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }

    async fn wait(&self) {
        loop {
            if self.is_set() {
                return;
            }
            let listener = self.event.listen();
            if self.is_set() {
                return;
            }
            listener.await;
        }
    }
}

/// Returns `Pending` once (waking itself at once), then `Ready`: lets the
/// executor run the other tasks it has ready, whatever the runtime.
async fn yield_once() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await;
}

/// What a holder and its heartbeat share.
pub(crate) struct Lease {
    pub(crate) backend: Arc<dyn LockBackend>,
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) options: LockOptions,
    pub(crate) timing: Timing,
    pub(crate) record: LockRecord,
    /// When the lock was stamped at creation, by our monotonic clock.
    stamped: std::time::Instant,
    lost: Signal,
    /// Set by release and drop: the heartbeat stops and loss is no longer reported.
    ended: Signal,
}

impl Lease {
    pub(crate) fn new(
        backend: Arc<dyn LockBackend>,
        runtime: Arc<dyn Runtime>,
        options: LockOptions,
        timing: Timing,
        record: LockRecord,
        stamped: std::time::Instant,
    ) -> Arc<Self> {
        Arc::new(Lease {
            backend,
            runtime,
            options,
            timing,
            record,
            stamped,
            lost: Signal::default(),
            ended: Signal::default(),
        })
    }

    fn owner(&self) -> &OwnerId {
        &self.record.owner
    }

    fn warn(&self, message: String) {
        self.options.warn(Warning {
            resource: self.backend.resource(),
            message,
        });
    }

    fn mark_lost(&self, why: &str) {
        if !self.ended.is_set() && self.lost.set() {
            self.warn(format!("ownership lost: {why}"));
        }
    }

    pub(crate) async fn refresh(&self) -> Result<bool, Error> {
        if self.lost.is_set() || self.ended.is_set() {
            return Ok(false);
        }
        match self
            .backend
            .refresh(self.owner(), self.runtime.now())
            .await?
        {
            Refreshed::Refreshed => Ok(true),
            Refreshed::Lost => {
                self.mark_lost("refresh found the lock gone or replaced");
                Ok(false)
            }
        }
    }

    /// The heartbeat: refreshes every `heartbeat` until the lease ends or is lost.
    ///
    /// The lease expires at the last successful stamp plus `stale`, by our own
    /// monotonic clock: the heartbeat never sleeps past that moment and races
    /// each refresh against it, so `lost()` fires by then at the latest, even
    /// when a refresh hangs or a beat oversleeps. Peers can break the lock
    /// only after it.
    pub(crate) async fn heartbeat(self: Arc<Self>) {
        const EXPIRED: &str =
            "the lease expired: no refresh succeeded within `stale`, so a peer may break the lock";
        let mut policy = Heartbeat::new(self.timing, self.stamped);
        let mut wait = policy.first();
        loop {
            let until_expiry = policy
                .expiry()
                .saturating_duration_since(self.runtime.instant());
            if until_expiry.is_zero() {
                self.mark_lost(EXPIRED);
                return;
            }
            if !self.sleep_unless_ended(wait.min(until_expiry)).await {
                return;
            }
            let started = self.runtime.instant();
            let Some(result) = self.refresh_before(policy.expiry()).await else {
                if !self.ended.is_set() {
                    self.mark_lost(EXPIRED);
                }
                return;
            };
            if self.ended.is_set() {
                return;
            }
            let result = match result {
                Ok(refreshed) => Some(refreshed),
                Err(error) => {
                    self.warn(format!("heartbeat failed, will retry: {error}"));
                    None
                }
            };
            match policy.after(result, started, self.runtime.instant()) {
                Beat::Again(next) => wait = next,
                Beat::Lost => {
                    self.mark_lost(match result {
                        Some(_) => "the heartbeat found the lock gone or replaced",
                        None => {
                            "heartbeats failed for so long that a peer may break the lock before the next one"
                        }
                    });
                    return;
                }
            }
        }
    }

    /// One heartbeat refresh, unless the lease expires first (`None`).
    async fn refresh_before(
        &self,
        expiry: std::time::Instant,
    ) -> Option<Result<Refreshed, crate::BackendError>> {
        let left = expiry.saturating_duration_since(self.runtime.instant());
        let mut timer = self.runtime.sleep(left);
        let mut refresh = self.backend.refresh(self.owner(), self.runtime.now());
        poll_fn(|cx| {
            if let Poll::Ready(result) = refresh.as_mut().poll(cx) {
                return Poll::Ready(Some(result));
            }
            timer.as_mut().poll(cx).map(|()| None)
        })
        .await
    }

    /// Sleeps `duration`; returns `false` early if the lease ended meanwhile.
    async fn sleep_unless_ended(&self, duration: std::time::Duration) -> bool {
        let mut sleep = self.runtime.sleep(duration);
        let mut ended = pin!(self.ended.wait());
        poll_fn(|cx| {
            if ended.as_mut().poll(cx).is_ready() {
                Poll::Ready(false)
            } else {
                sleep.as_mut().poll(cx).map(|()| true)
            }
        })
        .await
    }

    pub(crate) async fn release(&self) -> Result<Released, Error> {
        self.ended.set();
        let released = self.backend.release(self.owner()).await?;
        self.note_release(released);
        // Setting `ended` woke the heartbeat task; give the executor one turn
        // to run it to its end. Without it, a caller that drives each call
        // with `block_on` on a current-thread runtime never lets that runtime
        // run its tasks (every call completes at its first poll), and one
        // finished heartbeat per acquisition piles up until the runtime is
        // dropped (1.4 KiB each).
        yield_once().await;
        Ok(released)
    }

    fn release_in_drop(&self) {
        if self.ended.set() {
            match self.backend.release_blocking(self.owner()) {
                Some(Ok(released)) => self.note_release(released),
                Some(Err(error)) => self.warn(format!(
                    "release on drop failed; the lock goes stale since its heartbeat stopped: {error}"
                )),
                None => self.warn(
                    "this backend cannot release on drop; the lock goes stale since its heartbeat stopped (call `release().await` instead)"
                        .to_string(),
                ),
            }
        }
    }

    fn note_release(&self, released: Released) {
        match released {
            Released::Released => {}
            Released::NotOurs => self.warn(
                "at release the lock was no longer ours; the replacement was left in place".into(),
            ),
            Released::Absent => self.warn("at release the lock was already gone".into()),
        }
    }
}

/// A lock we hold. Its heartbeat keeps it fresh until it is released.
///
/// Call [`release`](Self::release) to release it and learn the outcome;
/// dropping it releases too, synchronously and best effort (the file-system
/// backend releases exactly as `release` does; a backend that cannot release
/// without awaiting leaves the lock to go stale, which is safe because the
/// heartbeat stops with the guard). A task that panics while holding the
/// guard therefore still releases.
///
/// Ownership can be lost while held: a pause longer than `stale` lets a peer
/// break the lock. Call [`refresh`](Self::refresh) right before a destructive
/// write, and watch [`lost`](Self::lost) in long critical sections.
#[must_use = "the lock is released as soon as the guard is dropped"]
#[clippy::has_significant_drop]
pub struct HeldLock {
    lease: Arc<Lease>,
    /// This process's turn on the resource, when waiters queue in process;
    /// dropped (passing the turn on) right after the lock is released.
    _local_turn: Option<KeyGuard<String>>,
}

impl HeldLock {
    pub(crate) fn start(lease: Arc<Lease>, local_turn: Option<KeyGuard<String>>) -> Self {
        let heartbeat = Arc::clone(&lease).heartbeat();
        lease.runtime.spawn(Box::pin(heartbeat));
        HeldLock {
            lease,
            _local_turn: local_turn,
        }
    }

    /// Re-asserts ownership now: checks that the lock is still ours, re-stamps
    /// it, and checks again. `Ok(true)` while ours; `Ok(false)` once it was
    /// broken or replaced (and then [`lost`](Self::lost) resolves too).
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the backend could not check (ownership is then
    /// unknown: do not write).
    pub async fn refresh(&self) -> Result<bool, Error> {
        self.lease.refresh().await
    }

    /// Resolves once ownership is known to be lost: the heartbeat or a refresh
    /// found the lock gone or replaced. Never resolves while the lock is ours.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + '_ {
        self.lease.lost.wait()
    }

    /// Whether ownership is known to be lost.
    pub fn is_lost(&self) -> bool {
        self.lease.lost.is_set()
    }

    /// The record we wrote into the lock.
    pub fn record(&self) -> &LockRecord {
        &self.lease.record
    }

    /// Our owner id.
    pub fn owner(&self) -> &OwnerId {
        &self.lease.record.owner
    }

    /// Stops the heartbeat and removes the lock if it is still ours.
    ///
    /// `Released::NotOurs` or `Released::Absent` mean ownership had been lost
    /// (a warning is reported too); the other lock is left untouched.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the backend failed; the heartbeat has stopped,
    /// so the lock goes stale and peers break it after `stale`.
    pub async fn release(self) -> Result<Released, Error> {
        self.lease.release().await
    }

    /// A view of this lease for a task (what [`LockState`] offers).
    pub(crate) fn state(&self) -> LockState {
        LockState {
            lease: Some(Arc::clone(&self.lease)),
        }
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        self.lease.release_in_drop();
    }
}

impl fmt::Debug for HeldLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeldLock")
            .field("resource", &self.lease.backend.resource())
            .field("owner", &self.lease.record.owner)
            .field("lost", &self.is_lost())
            .finish()
    }
}

/// What a task run by `with_lock` knows about the lock: whether it was
/// acquired, and (if so) how to re-assert it.
#[derive(Clone)]
pub struct LockState {
    lease: Option<Arc<Lease>>,
}

impl LockState {
    pub(crate) fn unlocked() -> Self {
        LockState { lease: None }
    }

    /// Whether the task runs under the lock (`false`: best effort, unlocked).
    pub fn acquired(&self) -> bool {
        self.lease.is_some()
    }

    /// As [`HeldLock::refresh`]; `Ok(false)` when the lock was never acquired.
    ///
    /// # Errors
    ///
    /// As [`HeldLock::refresh`].
    pub async fn refresh(&self) -> Result<bool, Error> {
        match &self.lease {
            Some(lease) => lease.refresh().await,
            None => Ok(false),
        }
    }

    /// Whether ownership is known to be lost (always `true` when unlocked).
    pub fn is_lost(&self) -> bool {
        self.lease.as_ref().is_none_or(|lease| lease.lost.is_set())
    }

    /// Resolves once ownership is lost; at once when the lock was never acquired.
    pub async fn lost(&self) {
        if let Some(lease) = &self.lease {
            lease.lost.wait().await;
        }
    }
}

impl fmt::Debug for LockState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockState")
            .field("acquired", &self.acquired())
            .field("lost", &self.is_lost())
            .finish()
    }
}
