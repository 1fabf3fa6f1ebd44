//! A held lock: the state a holder shares with its heartbeat, the guard, and
//! the view a best-effort task gets.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant, SystemTime};

use event_listener::Event;
use tracing::Instrument as _;

use super::backend::{BackendError, Created, LockBackend, Refreshed, Released};
use super::heartbeat::{Beat, Heartbeat};
use super::logs::Compact;
use super::options::{LockOptions, Timing, Warning};
use super::record::{LockRecord, OwnerId};
use crate::clock::{Runtime, Sleep};
use crate::error::Error;
use crate::serializer::KeyGuard;

/// Why a lease that nobody found taken ends anyway.
const EXPIRED: &str =
    "the lease expired: no refresh succeeded within `stale`, so a peer may break the lock";

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

/// `Pending` once without asking to be woken, then `Ready`: for a future
/// whose next poll is certain to come from elsewhere (the task it is about
/// to be spawned as).
async fn pass_once() {
    let mut passed = false;
    poll_fn(|_| {
        if passed {
            Poll::Ready(())
        } else {
            passed = true;
            Poll::Pending
        }
    })
    .await;
}

/// Polls `call` until it completes (`Some`) or `deadline` passes (`None`).
/// A call begun less than `grace` before `deadline`, or after it, is given
/// `grace` from its start instead.
///
/// The call is not dropped: the caller still has it, and decides whether it
/// may be dropped half-way or must run to its end elsewhere.
///
/// The timer is made only when the call does not complete at its first
/// poll, so a backend whose steps complete at once (the file system's,
/// memory) pays no timer, no allocation and no clock read for the race.
pub(super) async fn within<F: Future + Unpin>(
    runtime: &dyn Runtime,
    call: &mut F,
    deadline: Instant,
    grace: Duration,
) -> Option<F::Output> {
    within_limit(runtime, call, |now| {
        deadline.max(now.checked_add(grace).unwrap_or(deadline))
    })
    .await
}

/// As [`within`], with the end of the race given by `limit` from the
/// moment the call first did not complete (read only then, as `within`).
pub(crate) async fn within_limit<F: Future + Unpin>(
    runtime: &dyn Runtime,
    call: &mut F,
    limit: impl FnOnce(Instant) -> Instant,
) -> Option<F::Output> {
    let mut limit = Some(limit);
    let mut timer: Option<Sleep> = None;
    poll_fn(|cx| {
        if let Poll::Ready(output) = Pin::new(&mut *call).poll(cx) {
            return Poll::Ready(Some(output));
        }
        let timer = timer.get_or_insert_with(|| {
            let now = runtime.instant();
            let end = limit.take().map_or(now, |limit| limit(now));
            runtime.sleep(end.saturating_duration_since(now))
        });
        timer.as_mut().poll(cx).map(|()| None)
    })
    .await
}

/// A duration as whole nanoseconds, saturating (584 years).
fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The states of [`Lease::created`].
const PENDING: u8 = 0;
const CREATED: u8 = 1;
const EXISTS: u8 = 2;
const FAILED: u8 = 3;

/// What a holder and its heartbeat share: one per acquisition, made for its
/// `try_create` (and reused by the next try when that one found the lock
/// taken).
pub(crate) struct Lease {
    pub(crate) backend: Arc<dyn LockBackend>,
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) options: LockOptions,
    pub(crate) timing: Timing,
    pub(crate) record: LockRecord,
    /// When the lock was stamped at creation, by our monotonic clock.
    stamped: Instant,
    /// When the lease expires, in nanoseconds after `stamped`. The heartbeat
    /// moves it on after each successful refresh; `lost()` keeps a timer of
    /// its own on it, so the loss is signalled on time even while the
    /// heartbeat's task is stuck in a backend call that blocks its thread.
    expiry: AtomicU64,
    /// What the `try_create` that opens the lease returned (`PENDING` until
    /// it returns), for the acquire driver to take.
    created: AtomicU8,
    /// That `try_create`'s error, when it failed.
    create_error: Mutex<Option<BackendError>>,
    /// The backend's fencing token for this grant, asked once right after
    /// `try_create` made the lock ours (unset: the backend gives none).
    token: OnceLock<u64>,
    lost: Signal,
    /// Set by release and drop, and by an acquisition that stopped waiting
    /// for its `try_create`: the heartbeat stops (or never starts) and loss
    /// is no longer reported.
    ended: Signal,
    /// The heartbeat's task until its first beat (see [`FirstBeat`]).
    first_beat: Mutex<FirstBeat>,
}

impl Lease {
    pub(crate) fn new(
        backend: Arc<dyn LockBackend>,
        runtime: Arc<dyn Runtime>,
        options: LockOptions,
        timing: Timing,
        record: LockRecord,
        stamped: Instant,
    ) -> Arc<Self> {
        Arc::new(Lease {
            backend,
            runtime,
            options,
            timing,
            record,
            stamped,
            expiry: AtomicU64::new(nanos(timing.stale)),
            created: AtomicU8::new(PENDING),
            create_error: Mutex::new(None),
            token: OnceLock::new(),
            lost: Signal::default(),
            ended: Signal::default(),
            first_beat: Mutex::default(),
        })
    }

    /// Readies a lease whose `try_create` found the lock taken for the next
    /// try, which writes a record stamped `acquired_at`.
    pub(crate) fn restart(&mut self, acquired_at: SystemTime, stamped: Instant) {
        self.record.acquired_at = acquired_at;
        self.stamped = stamped;
        *self.expiry.get_mut() = nanos(self.timing.stale);
        *self.created.get_mut() = PENDING;
        self.token.take();
        *self
            .create_error
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner) = None;
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
            tracing::warn!(
                resource = %self.backend.resource(),
                owner = %self.owner(),
                reason = why,
                "lost the lock"
            );
            // The event above is the loss's `tracing` report: the hook alone.
            if self.options.warning_hook().is_some() {
                self.options.call_hook(&Warning {
                    resource: self.backend.resource(),
                    message: format!("ownership lost: {why}"),
                });
            }
        }
    }

    /// A `release` span for this lease (see `logs.rs`).
    fn release_span(&self) -> tracing::Span {
        tracing::debug_span!(
            "release",
            resource = %self.backend.resource(),
            owner = %self.owner(),
        )
    }

    /// When the lease expires unless a refresh succeeds first.
    fn expiry(&self) -> Instant {
        let after = Duration::from_nanos(self.expiry.load(Ordering::Acquire));
        // Out of range only after centuries; expired is the safe answer.
        self.stamped.checked_add(after).unwrap_or(self.stamped)
    }

    fn extend_to(&self, expiry: Instant) {
        let after = nanos(expiry.saturating_duration_since(self.stamped));
        self.expiry.fetch_max(after, Ordering::AcqRel);
    }

    /// The lease's whole life as one task: `try_create`, then, if that
    /// created the lock, the heartbeat until the lease ends.
    ///
    /// The acquire driver polls it in place until `try_create` returns (see
    /// [`take_created`](Self::take_created)), and once the lock is ours
    /// hands the same box to the runtime as the heartbeat: the create costs
    /// no allocation beyond the heartbeat's, which was needed anyway. When
    /// the driver stops waiting first (its deadline passed, or its caller
    /// dropped it), it [abandons](Self::abandon) the lease and spawns this
    /// future, so the create still runs to its end, and a lock it creates
    /// then is released at once instead of going stale with nobody holding
    /// it.
    pub(crate) async fn run(self: Arc<Self>) {
        let created = self.backend.try_create(&self.record).await;
        // The driver only gives up between two of its polls, never during
        // one, so `ended` cannot change between here and the publication.
        let abandoned = self.ended.is_set();
        let ours = matches!(created, Ok(Created::Created));
        if ours && let Some(token) = self.backend.fencing_token(self.owner()) {
            // Before the publication: the holder reads it as soon as it
            // takes the lock.
            let _ = self.token.set(token);
        }
        self.put_created(created);
        if !ours {
            return;
        }
        if abandoned {
            self.release_abandoned().await;
            return;
        }
        // A root span: the hold outlives the acquisition that began it.
        // Made here, when the lock is created, although the heartbeat's
        // task starts at its first beat (see `FirstBeat`).
        let hold = tracing::debug_span!(
            parent: None,
            "hold",
            resource = %self.backend.resource(),
            owner = %self.owner(),
        );
        // The driver takes the lock in the poll that got here, without
        // polling again, and hands this future on (see `start_heartbeat`);
        // the task's first poll goes on from here.
        pass_once().await;
        self.heartbeat().instrument(hold).await;
    }

    fn put_created(&self, created: Result<Created, BackendError>) {
        let state = match created {
            Ok(Created::Created) => CREATED,
            Ok(Created::Exists) => EXISTS,
            Err(error) => {
                *self
                    .create_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(error);
                FAILED
            }
        };
        self.created.store(state, Ordering::Release);
    }

    /// What this lease's `try_create` returned, once it has (then only once).
    pub(crate) fn take_created(&self) -> Option<Result<Created, BackendError>> {
        match self.created.swap(PENDING, Ordering::AcqRel) {
            PENDING => None,
            CREATED => Some(Ok(Created::Created)),
            EXISTS => Some(Ok(Created::Exists)),
            _ => Some(Err(self
                .create_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
                .unwrap_or_else(|| BackendError::Other {
                    step: super::backend::Step::Create,
                    resource: self.backend.resource(),
                    source: "the create failed, and its error was taken before".into(),
                }))),
        }
    }

    /// Nobody will hold this lease: the acquisition stopped waiting for its
    /// `try_create`, which releases the lock if it still creates it.
    pub(crate) fn abandon(&self) {
        self.ended.set();
    }

    async fn release_abandoned(&self) {
        let why = "its acquisition had stopped waiting for the create";
        match self.backend.release(self.owner()).await {
            Ok(Released::Released) => {
                tracing::debug!(resource = %self.backend.resource(), "released a lock created after {why}");
            }
            Ok(released) => self.warn(format!(
                "a lock created after {why} was not there to release ({released:?})"
            )),
            Err(error) => self.warn(format!(
                "a lock created after {why} could not be released; nothing refreshes it, so it goes stale: {error}"
            )),
        }
    }

    pub(crate) async fn refresh(&self) -> Result<bool, Error> {
        if self.lost.is_set() || self.ended.is_set() {
            return Ok(false);
        }
        // Bounded by the lease's expiry: a refresh still running then cannot
        // confirm anything a peer would respect.
        let expiry = self.expiry();
        let mut refresh = self.backend.refresh(self.owner(), self.runtime.now());
        let Some(result) = within(&*self.runtime, &mut refresh, expiry, Duration::ZERO).await
        else {
            self.mark_lost(EXPIRED);
            return Ok(false);
        };
        match result? {
            Refreshed::Refreshed => Ok(true),
            Refreshed::Lost => {
                self.mark_lost("refresh found the lock gone or replaced");
                Ok(false)
            }
        }
    }

    /// Resolves once the lease is lost: when the heartbeat or a refresh
    /// finds the lock taken, or at the lease's expiry, which a timer of this
    /// future's own watches: the heartbeat's task may be stuck in a backend
    /// call that blocks its thread, and could then signal nothing.
    pub(crate) async fn wait_lost(&self) {
        loop {
            if self.lost.is_set() {
                return;
            }
            if self.ended.is_set() {
                // Released: loss is no longer reported.
                return self.lost.wait().await;
            }
            let left = self
                .expiry()
                .saturating_duration_since(self.runtime.instant());
            if left.is_zero() {
                self.mark_lost(EXPIRED);
                continue;
            }
            // Wakes at the expiry known now; a refresh may have moved it on
            // by then, which the next round reads.
            let mut timer = self.runtime.sleep(left);
            let mut signal = pin!(self.lost.wait());
            poll_fn(|cx| {
                if signal.as_mut().poll(cx).is_ready() {
                    Poll::Ready(())
                } else {
                    timer.as_mut().poll(cx)
                }
            })
            .await;
        }
    }

    pub(crate) async fn release(&self) -> Result<Released, Error> {
        self.ended.set();
        let started = self.disarm_heartbeat();
        let released = self.backend.release(self.owner()).await?;
        self.note_release(released);
        // Setting `ended` woke a heartbeat task that had started; give the
        // executor one turn to run it to its end. Without it, a caller that
        // drives each call with `block_on` on a current-thread runtime never
        // lets that runtime run its tasks (every call completes at its first
        // poll), and one finished heartbeat per acquisition piles up until
        // the runtime is dropped (1.4 KiB each).
        if started {
            yield_once().await;
        }
        Ok(released)
    }

    fn release_in_drop(&self) {
        if self.ended.set() {
            self.disarm_heartbeat();
            let span = self.release_span();
            let _in_span = span.enter();
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
            Released::Released => tracing::debug!(
                held = %Compact(self.runtime.instant().saturating_duration_since(self.stamped)),
                "released"
            ),
            Released::NotOurs => self.warn(
                "at release the lock was no longer ours; the replacement was left in place".into(),
            ),
            Released::Absent => self.warn("at release the lock was already gone".into()),
        }
    }
}

mod beat;
mod held;

use beat::FirstBeat;
pub use held::{HeldLock, LockState};
