//! The driver: runs the acquire machine against the backend, one step
//! at a time, each raced against its deadline, and hands an unfinished
//! step over to the runtime when the caller stops waiting.

use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::{Pin, pin};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use tracing::Instrument as _;
use tracing::field;

use super::acquire::{Acquire, Action, Event, Outcome, Waiting};
use super::backend::{Broke, ChangeListener, Created, LockBackend};
use super::handle::Lock;
use super::lease::{HeldLock, Lease, within, within_limit};
use super::logs::{self, Compact};
use super::record::{Holder, Inspection, LockRecord};
use crate::clock::Runtime;
use crate::error::Error;
use crate::serializer::{KeyGuard, Serializer};

/// The process-wide queue of waiters per lock resource (see
/// [`Lock::queue_in_process`]).
static LOCAL_QUEUE: LazyLock<Serializer<String>> = LazyLock::new(Serializer::new);

impl Lock {
    /// Waits for this process's turn on the resource, up to `max_wait`.
    pub(super) async fn local_turn(&self, max_wait: Duration) -> Option<KeyGuard<String>> {
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

    /// Acquires within `max_wait`; each backend step is raced against that
    /// deadline, or against `grace` from its start if that ends later.
    /// Runs in the `acquire` span (see `logs.rs`).
    pub(super) async fn acquire_within(
        &self,
        max_wait: Duration,
        grace: Duration,
    ) -> Result<HeldLock, Error> {
        let span = tracing::debug_span!(
            "acquire",
            resource = %self.backend.resource(),
            owner = field::Empty,
        );
        self.acquire_steps(max_wait, grace, &span)
            .instrument(span.clone())
            .await
    }

    /// [`acquire_within`](Self::acquire_within) inside its `span`.
    async fn acquire_steps(
        &self,
        max_wait: Duration,
        grace: Duration,
        span: &tracing::Span,
    ) -> Result<HeldLock, Error> {
        let started = self.runtime.instant();
        // `max_wait` is validated (at most a year): no overflow.
        let deadline = started.checked_add(max_wait).unwrap_or(started);
        let mut limit = StepLimit {
            deadline,
            grace,
            late: None,
        };
        let local = if self.queue_in_process {
            match self.local_turn(max_wait).await {
                Some(guard) => Some(guard),
                None => {
                    // Another task of this process holds or waits for it.
                    let mut look = self.backend.inspect();
                    let holder =
                        match within_limit(&*self.runtime, &mut look, |now| limit.until(now)).await
                        {
                            Some(inspection) => match inspection? {
                                Inspection::Present(observed) => Some(observed.holder),
                                Inspection::Absent => None,
                            },
                            None => None,
                        };
                    return Err(self.timed_out(holder, started));
                }
            }
        } else {
            None
        };
        let waited = self.runtime.instant().saturating_duration_since(started);
        // Moved into the first try's lease, so the uncontended path never
        // copies it.
        let record = self.record_for_this_process();
        if !span.is_disabled() {
            span.record("owner", field::display(&record.owner));
        }
        let mut template = Some(record);
        // What let the lock be had, for the `acquired` event: `release` is a
        // hand-off (the releaser's notification woke us).
        let mut via = "free";
        let mut reported_waiting = false;
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
        // A try that found the lock taken leaves its lease and the box its
        // task ran in to the next try.
        let mut spare_lease: Option<Arc<Lease>> = None;
        let mut spare_box = None;
        if !max_wait.is_zero()
            && let Some(mut turn) = self.backend.wait_behind_older()
        {
            // Bounded waiting: an older waiter asked to go first. Not past
            // `poll` (the wait is a courtesy, not a rule), nor the deadline
            // (the try below still gets its `grace`).
            tracing::debug!("waiting behind an older waiter");
            let until = deadline.min(self.runtime.instant() + self.timing.poll);
            // Its output says nothing: a turn that came and a wait that ran
            // out both lead to the try.
            let _ = within(&*self.runtime, &mut turn, until, Duration::ZERO).await;
            via = "turn";
            // Kept, as a place in the line, until the look that follows a
            // failed try subscribes anew.
            released = Some(turn);
        }
        loop {
            let event = match action {
                Action::TryCreate => {
                    let stamped = self.runtime.instant();
                    let acquired_at = self.runtime.now();
                    let lease = self.lease_for_try(
                        template.take(),
                        spare_lease.take(),
                        acquired_at,
                        stamped,
                    );
                    let run = reuse_box(spare_box.take(), Arc::clone(&lease).run());
                    let mut call = Unfinished::new(run, &*self.runtime, Some(&lease));
                    let outcome = {
                        let mut step = poll_fn(|cx| {
                            // Its output says nothing: a created lock's task
                            // goes on as the heartbeat.
                            let _ = call.poll(cx);
                            lease.take_created().map_or(Poll::Pending, Poll::Ready)
                        });
                        within_limit(&*self.runtime, &mut step, |now| limit.until(now)).await
                    };
                    let Some(created) = outcome else {
                        // Dropping `call` hands the create to the runtime,
                        // which releases the lock if it still creates it.
                        drop(call);
                        return Err(self.timed_out(machine.last_holder().cloned(), started));
                    };
                    let run = call.into_task();
                    match created? {
                        Created::Created => {
                            tracing::debug!(
                                waited = %Compact(self.since(started)),
                                via = %via,
                                "acquired"
                            );
                            return Ok(HeldLock::start(lease, run, local));
                        }
                        Created::Exists => {
                            spare_lease = Some(lease);
                            spare_box = Some(run);
                            Event::Created(Created::Exists)
                        }
                    }
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
                    // A look is safe to drop half-way.
                    let looked = {
                        let mut look = pin!(self.inspect_judging_liveness(&mut fresh_exits));
                        within_limit(&*self.runtime, &mut look, |now| limit.until(now)).await
                    };
                    let Some(event) = looked else {
                        return Err(self.timed_out(machine.last_holder().cloned(), started));
                    };
                    let event = event?;
                    released = fresh_release;
                    exits = fresh_exits;
                    event
                }
                Action::Break { observed, reason } => {
                    // A break stopped half-way can leave its marker or its
                    // trash, or a displaced lock not put back: it runs to its
                    // end even when the acquisition stops waiting for it.
                    // The observation comes back for the log.
                    let backend = Arc::clone(&self.backend);
                    let breaking = Box::pin(async move {
                        let broke = backend.break_if_unchanged(&observed).await;
                        (broke, observed)
                    });
                    let mut call = Unfinished::new(breaking, &*self.runtime, None);
                    let outcome = {
                        let mut step = poll_fn(|cx| call.poll(cx));
                        within_limit(&*self.runtime, &mut step, |now| limit.until(now)).await
                    };
                    let Some((broke, observed)) = outcome else {
                        drop(call);
                        return Err(self.timed_out(machine.last_holder().cloned(), started));
                    };
                    drop(call.into_task());
                    let broke = broke?;
                    if broke == Broke::Broken {
                        via = "break";
                        let record = observed.holder.record();
                        tracing::warn!(
                            resource = %self.backend.resource(),
                            holder.pid = record.map(|r| r.pid),
                            holder.host = record.and_then(|r| r.field("host")).map(field::display),
                            holder.owner = record.map(|r| field::display(&r.owner)),
                            holder.summary = match &observed.holder {
                                Holder::Foreign { summary } => Some(field::display(summary)),
                                Holder::Record(_) => None,
                            },
                            age = %logs::age(observed.refreshed_at, self.runtime.now()),
                            reason = %logs::stale_reason(reason),
                            "broke a stale lock"
                        );
                    } else {
                        tracing::debug!(outcome = ?broke, "did not break the stale lock");
                    }
                    Event::Broke(broke)
                }
                Action::Sleep(duration) => {
                    if !reported_waiting {
                        reported_waiting = true;
                        tracing::debug!(
                            holder = machine.last_holder().map(field::display),
                            "waiting"
                        );
                    }
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
                            via = "release";
                            tracing::debug!(by = "release", "woken");
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
                            if matches!(woke, Woken::HolderExited) {
                                via = "holder_exit";
                                tracing::debug!(by = "holder_exit", "woken");
                            } else {
                                via = "poll";
                                tracing::trace!(by = "poll", "woken");
                            }
                            exits.clear();
                            Event::Woke
                        }
                    }
                }
                Action::Done(Outcome::TimedOut { holder, .. }) => {
                    // The machine counts from its own start; the caller
                    // waited from the call, time in the local queue included.
                    return Err(self.timed_out(holder, started));
                }
                Action::Done(Outcome::Acquired) => {
                    unreachable!("Acquired is returned right after Created")
                }
            };
            action = machine.next(event, self.now());
        }
    }

    /// The lease for a try: the last try's, when it found the lock taken
    /// and nothing else holds its lease any more, or a new one.
    pub(super) fn lease_for_try(
        &self,
        template: Option<LockRecord>,
        spare: Option<Arc<Lease>>,
        acquired_at: SystemTime,
        stamped: Instant,
    ) -> Arc<Lease> {
        let mut record = match spare {
            Some(mut lease) => {
                if let Some(reused) = Arc::get_mut(&mut lease) {
                    reused.restart(acquired_at, stamped);
                    return lease;
                }
                lease.record.clone()
            }
            None => template.unwrap_or_else(|| self.record_for_this_process()),
        };
        record.acquired_at = acquired_at;
        Lease::new(
            Arc::clone(&self.backend),
            Arc::clone(&self.runtime),
            self.options.clone(),
            self.timing,
            record,
            stamped,
        )
    }

    /// The time since `started`, by the runtime's clock.
    pub(super) fn since(&self, started: Instant) -> Duration {
        self.runtime.instant().saturating_duration_since(started)
    }

    pub(super) fn timed_out(&self, holder: Option<Holder>, started: Instant) -> Error {
        let waited = self.since(started);
        tracing::debug!(
            waited = %Compact(waited),
            holder = holder.as_ref().map(field::display),
            "gave up waiting"
        );
        Error::Timeout {
            resource: self.backend.resource(),
            holder,
            waited,
        }
    }
}

/// How long each backend step of one acquisition may take: until the
/// deadline, or, from the first step begun less than `grace` before it (or
/// after it), until `grace` after that step's start; every later step
/// shares that limit. So a backend that is slow rather than hung, and takes
/// several steps after the deadline (a look, a break, another try), still
/// ends the acquisition within `max_wait` plus one `grace`.
struct StepLimit {
    deadline: Instant,
    grace: Duration,
    late: Option<Instant>,
}

impl StepLimit {
    /// The limit of a step that has been running since `now`.
    fn until(&mut self, now: Instant) -> Instant {
        if let Some(late) = self.late {
            return late;
        }
        match now.checked_add(self.grace) {
            Some(end) if end > self.deadline => *self.late.insert(end),
            _ => self.deadline,
        }
    }
}

/// `future`, in `spare`'s allocation when there is one.
fn reuse_box<F: Future>(spare: Option<Pin<Box<F>>>, future: F) -> Pin<Box<F>> {
    match spare {
        Some(mut boxed) => {
            boxed.as_mut().set(future);
            boxed
        }
        None => Box::pin(future),
    }
}

/// A backend step the driver started and must not drop half-way. Dropped
/// before [`into_task`](Self::into_task) (the acquisition stopped waiting
/// for it, or its caller dropped the acquire future), it hands the step to
/// the runtime to run to its end, first abandoning the lease of a create.
struct Unfinished<'a, F: Future + Send + 'static>
where
    F::Output: Send,
{
    /// `Some` until `into_task` or drop.
    task: Option<Pin<Box<F>>>,
    runtime: &'a dyn Runtime,
    lease: Option<&'a Lease>,
}

impl<'a, F: Future + Send + 'static> Unfinished<'a, F>
where
    F::Output: Send,
{
    fn new(task: Pin<Box<F>>, runtime: &'a dyn Runtime, lease: Option<&'a Lease>) -> Self {
        Unfinished {
            task: Some(task),
            runtime,
            lease,
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<F::Output> {
        match &mut self.task {
            Some(task) => task.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }

    /// The task back: the driver saw it through.
    fn into_task(mut self) -> Pin<Box<F>> {
        match self.task.take() {
            Some(task) => task,
            None => unreachable!("an Unfinished holds its task until it is taken or dropped"),
        }
    }
}

impl<F: Future + Send + 'static> Drop for Unfinished<'_, F>
where
    F::Output: Send,
{
    fn drop(&mut self) {
        let Some(task) = self.task.take() else {
            return;
        };
        if let Some(lease) = self.lease {
            lease.abandon();
        }
        hand_over(
            self.runtime,
            Box::pin(async move {
                let _ = task.await;
            }),
        );
    }
}

/// Runs `task` to its end on the runtime; never panics, since it runs in
/// `Drop`, also while the thread unwinds from a panic elsewhere (the caller
/// dropped `acquire` as a panic left its scope): a spawn that panics then
/// is caught here, before it could leave the destructor.
fn hand_over(runtime: &dyn Runtime, task: Pin<Box<dyn Future<Output = ()> + Send + 'static>>) {
    const LEFT: &str = "a lock step the acquisition stopped waiting for could not be handed to the runtime and was dropped; a lock it was creating goes stale";
    if catch_unwind(AssertUnwindSafe(|| runtime.spawn(task))).is_err() {
        tracing::warn!("{LEFT} (the runtime's spawn panicked)");
    }
}

/// What ended a waiter's sleep.
enum Woken {
    Released,
    HolderExited,
    Timer,
}
