//! Property test of the pure acquire machine: random outcomes of every
//! backend step, random observations (fresh, old, from the future, the same
//! lock again, a dead holder) and random time, checked after every step.
//!
//! Safety:
//!
//! * it never sleeps past the deadline, nor longer than `poll`, nor zero;
//! * it never takes more than `MAX_STEPS_WITHOUT_SLEEP` steps without sleeping;
//! * it breaks only an observation that is stale by one of the rules (old
//!   stamp, unchanged for `stale`, or a dead holder), and breaks exactly the
//!   observation it was shown;
//! * it gives up only at or after the deadline, naming the last holder seen;
//! * after `Created` it is done: acquired.
//!
//! Liveness (the next action, unless it has used up its steps without a
//! sleep, in which case it must back off: sleep, or give up at the deadline):
//!
//! * a dead holder's lock is broken at once;
//! * a lock whose stamp is older than `stale + max_clock_skew`, or that was
//!   seen unchanged for `stale` in a row of looks, is broken at once;
//! * a free lock (`Absent`, or gone after a break) is tried at once, and so
//!   is the lock after every sleep;
//! * a lost create race or a changed lock is looked at again at once.
//!
//! `broken_machines_fail_the_liveness_property` shows that these can fail:
//! machines that ignore a dead holder, never break a stale lock, or never
//! try a free one are caught, each by a liveness assertion.
#![allow(clippy::unwrap_used)]

use std::ops::Not;
use std::time::{Duration, Instant, SystemTime};

use heldlock_core::acquire::{Acquire, Action, Event, MAX_STEPS_WITHOUT_SLEEP, Outcome, Waiting};
use heldlock_core::stale::{Now, StaleReason};
use heldlock_core::{
    Broke, Created, Holder, Identity, Inspection, LockOptions, LockRecord, Observed, Timing,
};
use proptest::prelude::*;
use proptest::test_runner::{RngAlgorithm, TestError, TestRng, TestRunner};

/// What the "world" answers to the machine's action.
#[derive(Clone, Debug)]
enum Answer {
    CreateWins,
    CreateLoses,
    Absent,
    /// A lock of identity `id`, stamped `age_ms` ago (negative: the future).
    Present {
        id: u8,
        age_ms: i64,
    },
    /// The lock shown at the last look, unchanged (same identity and stamp).
    Again,
    Dead {
        id: u8,
    },
    Broke(u8),
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        1 => Just(Answer::CreateWins),
        4 => Just(Answer::CreateLoses),
        1 => Just(Answer::Absent),
        6 => (0u8..3, -2_000i64..20_000).prop_map(|(id, age_ms)| Answer::Present { id, age_ms }),
        3 => Just(Answer::Again),
        1 => (0u8..3).prop_map(|id| Answer::Dead { id }),
        2 => (0u8..3).prop_map(Answer::Broke),
    ]
}

/// One generated run: the options and what the world answers.
#[derive(Clone, Debug)]
struct Case {
    stale_ms: u64,
    poll_ms: u64,
    max_wait_ms: u64,
    notified: bool,
    seed: u64,
    answers: Vec<(Answer, u64)>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        50u64..10_000,
        1u64..500,
        0u64..3_000,
        any::<bool>(),
        any::<u64>(),
        prop::collection::vec((answer(), 0u64..200), 1..120),
    )
        .prop_map(
            |(stale_ms, poll_ms, max_wait_ms, notified, seed, answers)| Case {
                stale_ms,
                poll_ms,
                max_wait_ms,
                notified,
                seed,
                answers,
            },
        )
}

fn observed(id: u8, stamp: SystemTime) -> Observed {
    Observed::new(
        Holder::Record(LockRecord::for_this_process(stamp)),
        Identity::new(vec![id]),
        stamp,
    )
}

/// A deliberate flaw, to show that the liveness property catches it.
#[derive(Clone, Copy, Debug)]
enum Flaw {
    /// Takes the host's proof of a dead holder for a plain look.
    IgnoresDeadHolder,
    /// Takes every look at a lock for proof of a live holder: never breaks.
    NeverBreaksAStaleLock,
    /// Takes "no lock" for "the lock changed": looks again, never creates.
    NeverTriesAFreeLock,
}

/// The machine under test: the real one, or the real one with a flaw
/// (a wrong reading of the events it is fed).
struct Machine {
    inner: Acquire,
    flaw: Option<Flaw>,
}

impl Machine {
    fn next(&mut self, event: Event, now: Now) -> Action {
        let event = match (self.flaw, event) {
            (Some(Flaw::IgnoresDeadHolder), Event::HolderDead(o)) => {
                Event::Inspected(Inspection::Present(o))
            }
            (Some(Flaw::NeverBreaksAStaleLock), Event::Inspected(Inspection::Present(o))) => {
                Event::HolderAlive(o)
            }
            (Some(Flaw::NeverTriesAFreeLock), Event::Inspected(Inspection::Absent)) => {
                Event::Broke(Broke::Changed)
            }
            (_, event) => event,
        };
        self.inner.next(event, now)
    }
}

/// What the looks so far showed the machine.
#[derive(Default)]
struct Looks {
    /// Per identity and stamp: when it was first shown (for the unchanged
    /// rule's safety).
    first_seen: Vec<(Identity, SystemTime, Instant)>,
    /// The observation shown at every look since `.1` (the time the machine
    /// was fed the first of them; `None` until then), with no other look in
    /// between: when the unchanged rule must fire. The machine's own watch
    /// starts no later, so this never demands a break too early.
    unchanged: Option<(Observed, Option<Instant>)>,
    last_holder: Option<Holder>,
    /// The last observation, and whether it was of a dead holder.
    shown: Option<(Observed, bool)>,
}

impl Looks {
    fn present(&mut self, o: Observed, now: Now) -> Event {
        let stamp = o.refreshed_at;
        if !self
            .first_seen
            .iter()
            .any(|(i, s, _)| *i == o.identity && *s == stamp)
        {
            self.first_seen
                .push((o.identity.clone(), stamp, now.instant));
        }
        if self.unchanged.as_ref().is_none_or(|(u, _)| *u != o) {
            self.unchanged = Some((o.clone(), None));
        }
        self.last_holder = Some(o.holder.clone());
        self.shown = Some((o.clone(), false));
        Event::Inspected(Inspection::Present(o))
    }

    /// Notes when the machine is fed a look that started a row.
    fn fed_at(&mut self, now: Now) {
        if let Some((_, since @ None)) = &mut self.unchanged {
            *since = Some(now.instant);
        }
    }

    fn dead(&mut self, o: Observed) -> Event {
        self.last_holder = Some(o.holder.clone());
        self.shown = Some((o.clone(), true));
        self.unchanged = None;
        Event::HolderDead(o)
    }

    fn absent(&mut self) -> Event {
        self.unchanged = None;
        Event::Inspected(Inspection::Absent)
    }
}

/// What the next action must be, as far as liveness goes.
#[derive(Debug)]
enum Must {
    /// Exactly this action.
    Be(Action),
    /// A break of exactly this observation (for whichever stale reason).
    Break(Observed),
    /// A sleep, or giving up (its steps without a sleep are used up).
    BackOff,
    /// Safety alone decides.
    Anything,
}

/// Runs one case on the real machine (`flaw: None`) or a flawed one.
fn run_case(case: &Case, flaw: Option<Flaw>) -> Result<(), TestCaseError> {
    let timing = LockOptions::new(Duration::from_millis(case.stale_ms))
        .poll(Duration::from_millis(case.poll_ms))
        .validate()
        .unwrap();
    let max_wait = Duration::from_millis(case.max_wait_ms);
    let start = Now {
        wall: SystemTime::now(),
        instant: Instant::now(),
    };
    let mut now = start;
    let deadline = start.instant + max_wait;
    let waiting = if case.notified {
        Waiting::Notified
    } else {
        Waiting::Backoff { seed: case.seed }
    };
    let mut machine = Machine {
        inner: Acquire::new(timing, max_wait, now, waiting),
        flaw,
    };
    let mut action = machine.inner.start();
    let mut steps_without_sleep = 0u32;
    let mut looks = Looks::default();
    let mut previous_notified = false;

    for (answer, advance_ms) in case.answers.iter().cloned() {
        // An inspect that drew a break outcome just finds a fresh lock.
        let answer = match (&action, answer) {
            (Action::Inspect, Answer::Broke(id)) => Answer::Present { id, age_ms: 0 },
            (_, answer) => answer,
        };
        let event = match (&action, answer) {
            (Action::Done(_), _) => break,
            (Action::TryCreate, Answer::CreateWins) => Event::Created(Created::Created),
            (Action::TryCreate, _) => Event::Created(Created::Exists),
            (Action::Inspect, Answer::Dead { id }) => looks.dead(observed(id, now.wall)),
            (Action::Inspect, Answer::Present { id, age_ms }) => {
                let stamp = if age_ms >= 0 {
                    now.wall - Duration::from_millis(age_ms.unsigned_abs())
                } else {
                    now.wall + Duration::from_millis(age_ms.unsigned_abs())
                };
                looks.present(observed(id, stamp), now)
            }
            (Action::Inspect, Answer::Again) => match looks.shown.clone() {
                Some((o, false)) => looks.present(o, now),
                _ => looks.absent(),
            },
            (Action::Inspect, _) => looks.absent(),
            (Action::Break { observed, reason }, answer) => {
                // It breaks exactly what it was shown, and only if stale.
                let (last, dead) = looks.shown.clone().expect("a break follows a look");
                prop_assert_eq!(observed, &last);
                match reason {
                    StaleReason::HolderDead => prop_assert!(dead),
                    StaleReason::OldStamp { age } => {
                        prop_assert!(*age > timing.stale);
                        prop_assert_eq!(
                            now.wall.duration_since(observed.refreshed_at).ok(),
                            Some(*age)
                        );
                    }
                    StaleReason::Unchanged { for_ } => {
                        prop_assert!(*for_ >= timing.stale);
                        let (_, _, since) = looks
                            .first_seen
                            .iter()
                            .find(|(i, s, _)| {
                                *i == observed.identity && *s == observed.refreshed_at
                            })
                            .expect("seen before");
                        prop_assert!(now.instant.duration_since(*since) >= timing.stale);
                    }
                    other => panic!("a stale reason the model does not know: {other:?}"),
                }
                match answer {
                    Answer::Broke(0) | Answer::Absent => Event::Broke(Broke::Absent),
                    Answer::Broke(1) | Answer::CreateWins => Event::Broke(Broke::Broken),
                    _ => Event::Broke(Broke::Changed),
                }
            }
            (Action::Sleep(d), _) => {
                prop_assert!(
                    !d.is_zero() || now.instant >= deadline,
                    "no zero sleep before the deadline"
                );
                prop_assert!(*d <= timing.poll, "never longer than poll: {d:?}");
                prop_assert!(now.instant + *d <= deadline, "never past the deadline");
                now.wall += *d;
                now.instant += *d;
                steps_without_sleep = 0;
                // Sometimes a release notification ends the sleep.
                if advance_ms % 3 == 0 {
                    Event::Notified
                } else {
                    Event::Woke
                }
            }
        };
        let exists_after_notification =
            matches!(event, Event::Created(Created::Exists)) && previous_notified;
        previous_notified = matches!(event, Event::Notified);
        if !matches!(event, Event::Woke | Event::Notified) {
            steps_without_sleep += 1;
            prop_assert!(
                steps_without_sleep <= MAX_STEPS_WITHOUT_SLEEP + 1,
                "it spins"
            );
        }
        // Time passes during backend steps too.
        let step = Duration::from_millis(advance_ms);
        now.wall += step;
        now.instant += step;
        looks.fed_at(now);
        let must = liveness(&event, steps_without_sleep, &looks.unchanged, now, &timing);
        let fed = matches!(must, Must::Anything).not().then(|| event.clone());
        action = machine.next(event, now);
        if let Some(event) = fed {
            check_liveness(&must, &action, &event)?;
        }
        if exists_after_notification {
            // Whoever won the race is looked at, so that its death is
            // watched too (or the deadline ends the wait).
            prop_assert!(
                matches!(
                    action,
                    Action::Inspect | Action::Done(Outcome::TimedOut { .. })
                ),
                "did not look at the winner of a race after a release: {action:?}"
            );
        }
        if let Action::Done(Outcome::TimedOut { holder, waited }) = &action {
            prop_assert!(now.instant >= deadline, "gave up early");
            prop_assert_eq!(*waited, now.instant - start.instant);
            prop_assert_eq!(holder, &looks.last_holder);
        }
    }
    Ok(())
}

/// What liveness demands after `event`, the `steps`-th step since the last
/// sleep, fed at `now`.
fn liveness(
    event: &Event,
    steps: u32,
    unchanged: &Option<(Observed, Option<Instant>)>,
    now: Now,
    timing: &Timing,
) -> Must {
    match event {
        Event::Created(Created::Created) => return Must::Be(Action::Done(Outcome::Acquired)),
        Event::Woke | Event::Notified => return Must::Be(Action::TryCreate),
        _ => {}
    }
    if steps > MAX_STEPS_WITHOUT_SLEEP {
        return Must::BackOff;
    }
    match event {
        Event::Created(Created::Exists) | Event::Broke(Broke::Changed) => Must::Be(Action::Inspect),
        Event::Inspected(Inspection::Absent) | Event::Broke(Broke::Broken | Broke::Absent) => {
            Must::Be(Action::TryCreate)
        }
        Event::HolderDead(o) => Must::Be(Action::Break {
            observed: o.clone(),
            reason: StaleReason::HolderDead,
        }),
        Event::Inspected(Inspection::Present(o)) => {
            let stale = timing.stale_for(o);
            let old = timing.wall_clock_rule
                && now
                    .wall
                    .duration_since(o.refreshed_at)
                    .is_ok_and(|age| age > stale + timing.max_clock_skew);
            let still = unchanged.as_ref().is_some_and(|(u, since)| {
                u == o && since.is_some_and(|since| now.instant.duration_since(since) >= stale)
            });
            if old || still {
                Must::Break(o.clone())
            } else {
                Must::Anything
            }
        }
        _ => Must::Anything,
    }
}

fn check_liveness(must: &Must, action: &Action, event: &Event) -> Result<(), TestCaseError> {
    match must {
        Must::Be(expected) => prop_assert_eq!(
            action,
            expected,
            "liveness: after {:?} the next action must be {:?}",
            event,
            expected
        ),
        Must::Break(o) => prop_assert!(
            matches!(action, Action::Break { observed, .. } if observed == o),
            "liveness: after {event:?} (stale) it must break that lock, not {action:?}"
        ),
        Must::BackOff => prop_assert!(
            matches!(
                action,
                Action::Sleep(_) | Action::Done(Outcome::TimedOut { .. })
            ),
            "liveness: out of steps without a sleep after {event:?}, it must back off, not {action:?}"
        ),
        Must::Anything => {}
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn acquire_machine_keeps_its_promises(case in case()) {
        run_case(&case, None)?;
    }
}

/// Each flawed machine fails the property, and by a liveness assertion:
/// the property would catch a machine that never breaks a dead holder's
/// or a stale lock, or never tries a free one.
#[test]
fn broken_machines_fail_the_liveness_property() {
    for flaw in [
        Flaw::IgnoresDeadHolder,
        Flaw::NeverBreaksAStaleLock,
        Flaw::NeverTriesAFreeLock,
    ] {
        let config = ProptestConfig {
            cases: 500,
            failure_persistence: None,
            max_shrink_iters: 0,
            ..ProptestConfig::default()
        };
        let rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
        let mut runner = TestRunner::new_with_rng(config, rng);
        match runner.run(&case(), |case| run_case(&case, Some(flaw))) {
            Err(TestError::Fail(reason, _)) => assert!(
                reason.message().contains("liveness:"),
                "{flaw:?} failed, but not by liveness: {}",
                reason.message()
            ),
            other => panic!("{flaw:?} was not caught: {other:?}"),
        }
    }
}
