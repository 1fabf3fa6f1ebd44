//! The heartbeat's task: handed to the runtime at its first beat, then
//! refreshing every heartbeat until the lease ends or is lost.

use super::*;

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
pub(super) struct FirstBeat {
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
    pub(super) fn start_heartbeat(self: &Arc<Self>, task: HeartbeatTask) {
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
    pub(super) fn disarm_heartbeat(&self) -> bool {
        let (waiting, spent, spawned) = {
            let mut slot = self.first_beat();
            (slot.waiting.take(), slot.spent.take(), slot.spawned)
        };
        // Dropped without the lock: the task holds this lease.
        drop((waiting, spent));
        spawned
    }

    /// The heartbeat: refreshes every `heartbeat` until the lease ends or is lost.
    ///
    /// The lease expires at the last successful stamp plus `stale`, by our own
    /// monotonic clock: the heartbeat never sleeps past that moment and races
    /// each refresh against it, so `lost()` fires by then at the latest, even
    /// when a refresh hangs or a beat oversleeps. Peers can break the lock
    /// only after it. (A refresh that blocks the thread in its poll, which no
    /// race can interrupt, is covered by `lost()`'s own timer.)
    pub(super) async fn heartbeat(&self) {
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
}
