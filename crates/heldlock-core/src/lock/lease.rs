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
    let mut timer: Option<Sleep> = None;
    poll_fn(|cx| {
        if let Poll::Ready(output) = Pin::new(&mut *call).poll(cx) {
            return Poll::Ready(Some(output));
        }
        let timer = timer.get_or_insert_with(|| {
            let left = deadline.saturating_duration_since(runtime.instant());
            runtime.sleep(left.max(grace))
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

/// The lease's task once it holds the lock: the heartbeat to be.
type HeartbeatTask = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The heartbeat's task between the acquisition and its first beat.
///
/// It is not handed to the runtime when the lock is taken, but when its
/// first beat is due: the timer of that beat is registered at once, and its
/// waker spawns the task. A hold shorter than `heartbeat` (the common case)
/// thus never starts a task, and its release never wakes one: on a
/// multi-thread runtime both would be a wake-up of another thread (about a
/// third of an uncontended acquire + release; issue 16). The beat comes
/// when it came before: the timer is the one the task would have slept on.
#[derive(Default)]
struct FirstBeat {
    /// The task (the lease's [`run`](Lease::run), at its hand-over point)
    /// and the timer of its first beat, while both wait.
    waiting: Option<(HeartbeatTask, Sleep)>,
    /// The timer, once its waker took the task: dropped by the task or the
    /// release, never inside the waker (a runtime may call it with its
    /// timer structures in use).
    spent: Option<Sleep>,
    /// The timer fired, perhaps before `waiting` was filled.
    fired: bool,
    /// The task was handed to the runtime.
    spawned: bool,
}

/// The waker of the first beat's timer: hands the task to the runtime.
struct FirstBeatWaker(Weak<Lease>);

impl Wake for FirstBeatWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(lease) = self.0.upgrade() {
            let task = {
                let mut slot = lease.first_beat();
                slot.fired = true;
                slot.waiting.take().map(|(task, timer)| {
                    slot.spent = Some(timer);
                    slot.spawned = true;
                    task
                })
            };
            if let Some(task) = task {
                lease.spawn_heartbeat(task);
            }
        }
    }
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

    fn first_beat(&self) -> MutexGuard<'_, FirstBeat> {
        // Only ever filled and emptied: a panic elsewhere while it was
        // locked cannot have left it inconsistent.
        self.first_beat
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Arms the heartbeat of a lease whose [`run`](Self::run) task created
    /// the lock: `task` is handed to the runtime when its first beat is due
    /// (see [`FirstBeat`]), or now if it is due already.
    fn start_heartbeat(self: &Arc<Self>, task: HeartbeatTask) {
        let first = Heartbeat::new(self.timing, self.stamped).first(self.runtime.instant());
        if !first.is_zero() {
            let mut timer = self.runtime.sleep(first);
            let beat = Arc::new(FirstBeatWaker(Arc::downgrade(self)));
            let waker = Waker::from(Arc::clone(&beat));
            // Polled without the slot's lock: a runtime may call the waker
            // from within the poll.
            let pending = timer
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending();
            // Deferred only where the timer kept the waker, and so will wake
            // it by itself. A timer may instead count on being polled again
            // by the executor that polled it (the blocking API's, inside its
            // `block_on`): nothing would start the heartbeat then, so it
            // starts now, as a task that sleeps first.
            let kept = Arc::strong_count(&beat) > 2;
            drop(waker);
            let mut slot = self.first_beat();
            if pending && kept && !slot.fired {
                slot.waiting = Some((task, timer));
                return;
            }
            slot.spawned = true;
            slot.spent = Some(timer);
        } else {
            self.first_beat().spawned = true;
        }
        self.spawn_heartbeat(task);
    }

    /// Hands the heartbeat's task to the runtime. It may run in a timer's
    /// waker, where a panic must not escape: a heartbeat that cannot start
    /// is reported as a loss now, since nothing will refresh the lock.
    fn spawn_heartbeat(&self, task: HeartbeatTask) {
        if self.ended.is_set() {
            return;
        }
        let spawned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.runtime.spawn(task);
        }));
        if spawned.is_err() {
            self.mark_lost("the heartbeat could not be started: the runtime's spawn panicked");
        }
    }

    /// Stops a heartbeat that has not started yet (its timer is cancelled
    /// and its task dropped, with no wake-up); whether its task was handed
    /// to the runtime before, and so may still have to run to its end.
    fn disarm_heartbeat(&self) -> bool {
        let (waiting, spent, spawned) = {
            let mut slot = self.first_beat();
            (slot.waiting.take(), slot.spent.take(), slot.spawned)
        };
        // Dropped without the lock: the task holds this lease.
        drop((waiting, spent));
        spawned
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

    /// The heartbeat: refreshes every `heartbeat` until the lease ends or is lost.
    ///
    /// The lease expires at the last successful stamp plus `stale`, by our own
    /// monotonic clock: the heartbeat never sleeps past that moment and races
    /// each refresh against it, so `lost()` fires by then at the latest, even
    /// when a refresh hangs or a beat oversleeps. Peers can break the lock
    /// only after it. (A refresh that blocks the thread in its poll, which no
    /// race can interrupt, is covered by `lost()`'s own timer.)
    async fn heartbeat(&self) {
        // The first beat's timer, which fired to start this task.
        let spent = self.first_beat().spent.take();
        drop(spent);
        let mut policy = Heartbeat::new(self.timing, self.stamped);
        let mut wait = policy.first(self.runtime.instant());
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
            let mut refresh = self.backend.refresh(self.owner(), self.runtime.now());
            let raced = within(
                &*self.runtime,
                &mut refresh,
                policy.expiry(),
                Duration::ZERO,
            )
            .await;
            // A refresh still running at the expiry is dropped: refreshing
            // is check-stamp-check on our own lock, safe to stop half-way.
            drop(refresh);
            let Some(result) = raced else {
                self.mark_lost(EXPIRED);
                return;
            };
            if self.ended.is_set() {
                return;
            }
            let result = match result {
                Ok(refreshed) => {
                    if refreshed == Refreshed::Refreshed {
                        tracing::trace!("refreshed");
                    }
                    Some(refreshed)
                }
                Err(error) => {
                    self.warn(format!("heartbeat failed, will retry: {error}"));
                    None
                }
            };
            let beat = policy.after(result, started, self.runtime.instant());
            self.extend_to(policy.expiry());
            match beat {
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

    /// Sleeps `duration`; returns `false` early if the lease ended meanwhile.
    async fn sleep_unless_ended(&self, duration: Duration) -> bool {
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
    /// The guard of a lease whose [`run`](Lease::run) task created the
    /// lock; that task goes on as the heartbeat, handed to the runtime when
    /// its first beat is due.
    pub(crate) fn start(
        lease: Arc<Lease>,
        run: Pin<Box<dyn Future<Output = ()> + Send + 'static>>,
        local_turn: Option<KeyGuard<String>>,
    ) -> Self {
        lease.start_heartbeat(run);
        HeldLock {
            lease,
            _local_turn: local_turn,
        }
    }

    /// Re-asserts ownership now: checks that the lock is still ours, re-stamps
    /// it, and checks again. `Ok(true)` while ours; `Ok(false)` once it was
    /// broken or replaced (and then [`lost`](Self::lost) resolves too), and
    /// when the backend has not answered by the lease's expiry (then nothing
    /// it says could keep peers from breaking the lock).
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the backend could not check (ownership is then
    /// unknown: do not write).
    ///
    /// # Cancel safety
    ///
    /// Dropping this future at any point changes nothing: the lock stays
    /// held and its heartbeat goes on (the backend's check-stamp-check on our
    /// own lock either re-stamped it or did not), and a refresh that did not
    /// finish reports no loss. Only a finished `Ok(true)` says the lock is
    /// ours.
    pub async fn refresh(&self) -> Result<bool, Error> {
        self.lease.refresh().await
    }

    /// Resolves once ownership is lost: the heartbeat or a refresh found the
    /// lock gone or replaced, or the lease expired (no refresh succeeded for
    /// `stale`, so peers may break the lock from then on). The expiry is
    /// watched by a timer of this future's own, so it resolves on time even
    /// while the heartbeat waits for a backend call that hangs. Never
    /// resolves while the lock is ours.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + '_ {
        self.lease.wait_lost()
    }

    /// Whether ownership is known to be lost. It reads no clock: an expiry
    /// shows here once the heartbeat, a refresh or a pending
    /// [`lost`](Self::lost) noticed it.
    pub fn is_lost(&self) -> bool {
        self.lease.lost.is_set()
    }

    /// The record we wrote into the lock.
    pub fn record(&self) -> &LockRecord {
        &self.lease.record
    }

    /// The fencing token of this grant: strictly greater than that of every
    /// earlier grant of the same lock, on a backend that can give one
    /// (`heldlock-etcd`: the key's create revision); `None` on the file
    /// backend, which has no token it could guarantee (`docs/safety.md`,
    /// "Fencing tokens").
    ///
    /// Hand it to the resource the lock protects with every write; the
    /// resource refuses a write whose token is lower than the highest it
    /// has seen, which stops a holder that was paused past its lease.
    pub fn fencing_token(&self) -> Option<u64> {
        self.lease.token.get().copied()
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
    ///
    /// # Cancel safety
    ///
    /// Dropped before its first poll, the future drops the guard it owns,
    /// which releases as a drop does (synchronously, best effort). From its
    /// first poll on, the heartbeat has stopped; dropped while the backend's
    /// release has not answered, the lock is released or left in place,
    /// never anything in between (a backend step dropped half-way is either
    /// not done or done: [`LockBackend`](crate::LockBackend), "Cancel
    /// safety"), and nothing tries again: a lock left in place goes stale
    /// and peers break it after `stale`. Dropped after the backend answered
    /// (it yields once more, to let the heartbeat's task end), the lock is
    /// released.
    pub async fn release(self) -> Result<Released, Error> {
        let span = self.lease.release_span();
        self.lease.release().instrument(span).await
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

    /// As [`HeldLock::fencing_token`]; `None` when the lock was never
    /// acquired.
    pub fn fencing_token(&self) -> Option<u64> {
        self.lease
            .as_ref()
            .and_then(|lease| lease.token.get().copied())
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

    /// As [`HeldLock::lost`]; at once when the lock was never acquired.
    pub async fn lost(&self) {
        if let Some(lease) = &self.lease {
            lease.wait_lost().await;
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
