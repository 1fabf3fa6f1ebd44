//! The acquire machine: a pure state machine that decides the next step of
//! taking a lock. It performs no I/O and reads no clock; the driver feeds it
//! each step's result and the time, and performs the action it returns.
//!
//! | after | outcome | next action |
//! | --- | --- | --- |
//! | start | | `TryCreate` |
//! | `TryCreate` | created | `Done(Acquired)` |
//! | `TryCreate` | exists | `Inspect` |
//! | `Inspect` | absent | `TryCreate` |
//! | `Inspect` | present, stale | `Break(observed)` |
//! | `Inspect` | present, holder known dead (same host) | `Break(observed)` |
//! | `Inspect` | present, a live process proven to hold it (same host) | back off |
//! | `Inspect` | present, fresh | back off |
//! | `Break` | broken / absent | `TryCreate` |
//! | `Break` | changed | `Inspect` |
//! | `Sleep` | woke | `TryCreate` |
//! | `Sleep` | notified of a change | `TryCreate` (if that finds a lock, the look that follows learns who won the race, and so whose death to watch) |
//! | back off | deadline passed | `Done(TimedOut)` |
//! | back off | time left, waiter notified of changes | `Sleep(min(poll, time left))` |
//! | back off | time left, no notification | `Sleep(min(backoff, time left))` |
//!
//! A waiter that the backend notifies of changes (`LockBackend::listen`) is
//! woken by the release itself; its sleep of `poll` is only the safety net.
//! A waiter without notification backs off exponentially from 1 ms up to
//! `poll`, with jitter (each sleep is drawn from the upper half of the current
//! step), so that waiters do not poll in lock-step.
//!
//! A run of more than [`MAX_STEPS_WITHOUT_SLEEP`] steps without a sleep (a
//! lock that keeps vanishing and reappearing) backs off too, so a waiter
//! never spins.

use std::time::{Duration, Instant};

use super::backend::{Broke, Created};
use super::options::Timing;
use super::record::{Holder, Inspection, Observed};
use super::stale::{Now, StaleJudge, StaleReason, Verdict};

/// Steps a waiter may take in a row before it must sleep.
pub const MAX_STEPS_WITHOUT_SLEEP: u32 = 8;

/// What the driver must do next.
///
/// Exhaustive on purpose, as are [`Event`] and [`Outcome`] (unlike the
/// backend's results): a driver must perform every action, so a new one is
/// a breaking change, never a silent wildcard arm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Call `LockBackend::try_create`.
    TryCreate,
    /// Call `LockBackend::inspect`.
    Inspect,
    /// Call `LockBackend::break_if_unchanged` with this observation.
    Break {
        /// The observation judged stale.
        observed: Observed,
        /// Why it was judged stale.
        reason: StaleReason,
    },
    /// Sleep this long, then report [`Event::Woke`] (or [`Event::Notified`]
    /// when a change notification ended the sleep early).
    Sleep(Duration),
    /// Stop: the lock is ours, or the wait is over.
    Done(Outcome),
}

/// The end of an acquisition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The lock is ours.
    Acquired,
    /// The deadline passed with the lock still busy.
    TimedOut {
        /// The holder last seen.
        holder: Option<Holder>,
        /// How long we waited.
        waited: Duration,
    },
}

/// The result of the last action, fed back to the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `TryCreate` returned.
    Created(Created),
    /// `Inspect` returned.
    Inspected(Inspection),
    /// `Inspect` found this lock, and the host knows its holder process is
    /// gone (`HostProbe::holder_is_dead`).
    HolderDead(Observed),
    /// `Inspect` found this lock, and the host has proof that a live process
    /// holds it (a kernel lock on it, held by the holder or a command that
    /// inherited it): it is fresh, whatever its age or its holder's pid say.
    HolderAlive(Observed),
    /// `Break` returned.
    Broke(Broke),
    /// The sleep ended.
    Woke,
    /// The sleep was ended early by a change notification (the lock may have
    /// been released). The driver has already subscribed again.
    Notified,
}

/// The acquire machine; see the [module docs](self) for its table.
#[derive(Clone, Debug)]
pub struct Acquire {
    timing: Timing,
    started: Instant,
    deadline: Instant,
    judge: StaleJudge,
    last_holder: Option<Holder>,
    steps_without_sleep: u32,
    done: bool,
    waiting: Waiting,
    /// Sleeps taken so far: the exponent of the backoff.
    sleeps: u32,
    /// xorshift64* state for the backoff jitter (never zero).
    jitter: u64,
}

/// How a waiter learns that a busy lock became free.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// The backend wakes the waiter on changes; sleeps of `poll` are a safety
    /// net only.
    Notified,
    /// Nothing wakes the waiter: exponential backoff with jitter from 1 ms to
    /// `poll`. The seed makes the jitter reproducible; any value works.
    Backoff {
        /// Seed of the jitter.
        seed: u64,
    },
}

/// The first backoff step.
pub const MIN_BACKOFF: Duration = Duration::from_millis(1);

impl Acquire {
    /// Starts an acquisition at `now` that waits at most `max_wait` (zero
    /// means: try once, never sleep). Call [`start`](Self::start) next.
    pub fn new(timing: Timing, max_wait: Duration, now: Now, waiting: Waiting) -> Self {
        let seed = match waiting {
            Waiting::Notified => 0,
            Waiting::Backoff { seed } => seed,
        };
        Acquire {
            timing,
            started: now.instant,
            deadline: now.instant + max_wait,
            judge: StaleJudge::new(),
            last_holder: None,
            steps_without_sleep: 0,
            done: false,
            waiting,
            sleeps: 0,
            // SplitMix64's finaliser spreads any seed, and `| 1` keeps it non-zero.
            jitter: splitmix(seed) | 1,
        }
    }

    /// Changes how the waiter learns that the lock became free; the driver
    /// calls it when it first finds the lock busy and knows whether the
    /// backend can notify it.
    pub fn set_waiting(&mut self, waiting: Waiting) {
        if let Waiting::Backoff { seed } = waiting {
            self.jitter = splitmix(seed) | 1;
        }
        self.waiting = waiting;
    }

    /// The holder seen at the last look, if any: what a caller that gives up
    /// mid-step reports.
    pub fn last_holder(&self) -> Option<&Holder> {
        self.last_holder.as_ref()
    }

    /// The first action.
    #[must_use]
    pub fn start(&mut self) -> Action {
        Action::TryCreate
    }

    /// Feeds the result of the last action and returns the next one. After
    /// `Done`, every call returns the same `Done` outcome kind again is not
    /// guaranteed: stop calling.
    #[must_use]
    pub fn next(&mut self, event: Event, now: Now) -> Action {
        debug_assert!(!self.done, "Acquire::next called after Done");
        let action = match event {
            Event::Created(Created::Created) => Action::Done(Outcome::Acquired),
            Event::Created(Created::Exists) => self.hurry(Action::Inspect, now),
            Event::Inspected(Inspection::Absent) => self.hurry(Action::TryCreate, now),
            Event::Inspected(Inspection::Present(observed)) => {
                self.last_holder = Some(observed.holder.clone());
                match self.judge.judge(&observed, now, &self.timing) {
                    Verdict::Stale(reason) => self.hurry(Action::Break { observed, reason }, now),
                    Verdict::Fresh => self.back_off(now),
                }
            }
            Event::HolderDead(observed) => {
                self.last_holder = Some(observed.holder.clone());
                let reason = StaleReason::HolderDead;
                self.hurry(Action::Break { observed, reason }, now)
            }
            Event::HolderAlive(observed) => {
                self.last_holder = Some(observed.holder.clone());
                // Alive now: the unchanged rule starts over from here.
                self.judge.forget();
                self.back_off(now)
            }
            Event::Broke(Broke::Broken | Broke::Absent) => self.hurry(Action::TryCreate, now),
            Event::Broke(Broke::Changed) => self.hurry(Action::Inspect, now),
            Event::Woke | Event::Notified => {
                self.steps_without_sleep = 0;
                Action::TryCreate
            }
        };
        self.done = matches!(action, Action::Done(_));
        action
    }

    /// `action`, unless the waiter has taken too many steps without a sleep.
    fn hurry(&mut self, action: Action, now: Now) -> Action {
        self.steps_without_sleep += 1;
        if self.steps_without_sleep > MAX_STEPS_WITHOUT_SLEEP {
            self.back_off(now)
        } else {
            action
        }
    }

    fn back_off(&mut self, now: Now) -> Action {
        self.steps_without_sleep = 0;
        if now.instant >= self.deadline {
            return Action::Done(Outcome::TimedOut {
                holder: self.last_holder.clone(),
                waited: now.instant.saturating_duration_since(self.started),
            });
        }
        let left = self.deadline.saturating_duration_since(now.instant);
        let step = match self.waiting {
            Waiting::Notified => self.timing.poll,
            Waiting::Backoff { .. } => self.next_backoff(),
        };
        self.sleeps = self.sleeps.saturating_add(1);
        Action::Sleep(step.min(left))
    }

    /// The next backoff sleep: a draw from the upper half of
    /// `min(poll, MIN_BACKOFF * 2^sleeps)`.
    fn next_backoff(&mut self) -> Duration {
        let step = MIN_BACKOFF
            .saturating_mul(1u32 << self.sleeps.min(30))
            .min(self.timing.poll);
        let nanos = u64::try_from(step.as_nanos()).unwrap_or(u64::MAX);
        let half = nanos / 2;
        // xorshift64*: cheap, and plenty for spreading sleeps.
        self.jitter ^= self.jitter >> 12;
        self.jitter ^= self.jitter << 25;
        self.jitter ^= self.jitter >> 27;
        let draw = self.jitter.wrapping_mul(0x2545_F491_4F6C_DD1D);
        Duration::from_nanos(half + draw % (nanos - half + 1))
    }
}

fn splitmix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
