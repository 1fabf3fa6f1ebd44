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
//! | `Inspect` | present, fresh | back off |
//! | `Break` | broken / absent | `TryCreate` |
//! | `Break` | changed | `Inspect` |
//! | `Sleep` | woke | `TryCreate` |
//! | back off | deadline passed | `Done(TimedOut)` |
//! | back off | time left | `Sleep(min(poll, time left))` |
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
    /// Sleep this long, then report [`Event::Woke`].
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
    /// `Break` returned.
    Broke(Broke),
    /// The sleep ended.
    Woke,
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
}

impl Acquire {
    /// Starts an acquisition at `now` that waits at most `max_wait` (zero
    /// means: try once, never sleep). Call [`start`](Self::start) next.
    pub fn new(timing: Timing, max_wait: Duration, now: Now) -> Self {
        Acquire {
            timing,
            started: now.instant,
            deadline: now.instant + max_wait,
            judge: StaleJudge::new(),
            last_holder: None,
            steps_without_sleep: 0,
            done: false,
        }
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
            Event::Broke(Broke::Broken | Broke::Absent) => self.hurry(Action::TryCreate, now),
            Event::Broke(Broke::Changed) => self.hurry(Action::Inspect, now),
            Event::Woke => {
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
        Action::Sleep(self.timing.poll.min(left))
    }
}
