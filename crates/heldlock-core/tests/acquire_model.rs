//! Property test of the pure acquire machine: random outcomes of every
//! backend step, random observations (fresh, old, from the future, the same
//! lock again, a dead holder) and random time, checked after every step:
//!
//! * it never sleeps past the deadline, nor longer than `poll`, nor zero;
//! * it never takes more than `MAX_STEPS_WITHOUT_SLEEP` steps without sleeping;
//! * it breaks only an observation that is stale by one of the rules (old
//!   stamp, unchanged for `stale`, or a dead holder), and breaks exactly the
//!   observation it was shown;
//! * it gives up only at or after the deadline, naming the last holder seen;
//! * after `Created` it is done: acquired.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant, SystemTime};

use heldlock_core::acquire::{Acquire, Action, Event, MAX_STEPS_WITHOUT_SLEEP, Outcome, Waiting};
use heldlock_core::stale::{Now, StaleReason};
use heldlock_core::{
    Broke, Created, Holder, Identity, Inspection, LockOptions, LockRecord, Observed,
};
use proptest::prelude::*;

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
        1 => (0u8..3).prop_map(|id| Answer::Dead { id }),
        2 => (0u8..3).prop_map(Answer::Broke),
    ]
}

fn observed(id: u8, stamp: SystemTime) -> Observed {
    Observed::new(
        Holder::Record(LockRecord::for_this_process(stamp)),
        Identity::new(vec![id]),
        stamp,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn acquire_machine_keeps_its_promises(
        stale_ms in 50u64..10_000,
        poll_ms in 1u64..500,
        max_wait_ms in 0u64..3_000,
        notified in any::<bool>(),
        seed in any::<u64>(),
        answers in prop::collection::vec((answer(), 0u64..200), 1..120),
    ) {
        let timing = LockOptions::new(Duration::from_millis(stale_ms))
            .poll(Duration::from_millis(poll_ms))
            .validate()
            .unwrap();
        let start = Now { wall: SystemTime::now(), instant: Instant::now() };
        let mut now = start;
        let deadline = start.instant + Duration::from_millis(max_wait_ms);
        let waiting = if notified { Waiting::Notified } else { Waiting::Backoff { seed } };
        let mut machine = Acquire::new(timing, Duration::from_millis(max_wait_ms), now, waiting);
        let mut action = machine.start();
        let mut steps_without_sleep = 0u32;
        // Per identity and stamp: when it was first shown (for the unchanged rule).
        let mut first_seen: Vec<(Identity, SystemTime, Instant)> = Vec::new();
        let mut last_holder: Option<Holder> = None;
        let mut shown: Option<(Observed, bool)> = None; // the last observation, and whether it was "dead"
        let mut previous_notified = false;

        for (answer, advance_ms) in answers {
            // An inspect that drew a break outcome just finds a fresh lock.
            let answer = match (&action, answer) {
                (Action::Inspect, Answer::Broke(id)) => Answer::Present { id, age_ms: 0 },
                (_, answer) => answer,
            };
            let event = match (&action, answer) {
                (Action::Done(_), _) => break,
                (Action::TryCreate, Answer::CreateWins) => Event::Created(Created::Created),
                (Action::TryCreate, _) => Event::Created(Created::Exists),
                (Action::Inspect, Answer::Absent) => Event::Inspected(Inspection::Absent),
                (Action::Inspect, Answer::Dead { id }) => {
                    let o = observed(id, now.wall);
                    last_holder = Some(o.holder.clone());
                    shown = Some((o.clone(), true));
                    Event::HolderDead(o)
                }
                (Action::Inspect, Answer::Present { id, age_ms }) => {
                    let stamp = if age_ms >= 0 {
                        now.wall - Duration::from_millis(age_ms as u64)
                    } else {
                        now.wall + Duration::from_millis((-age_ms) as u64)
                    };
                    let o = observed(id, stamp);
                    if !first_seen.iter().any(|(i, s, _)| *i == o.identity && *s == stamp) {
                        first_seen.push((o.identity.clone(), stamp, now.instant));
                    }
                    last_holder = Some(o.holder.clone());
                    shown = Some((o.clone(), false));
                    Event::Inspected(Inspection::Present(o))
                }
                (Action::Inspect, _) => Event::Inspected(Inspection::Absent),
                (Action::Break { observed, reason }, answer) => {
                    // It breaks exactly what it was shown, and only if stale.
                    let (last, dead) = shown.clone().expect("a break follows a look");
                    prop_assert_eq!(observed, &last);
                    match reason {
                        StaleReason::HolderDead => prop_assert!(dead),
                        StaleReason::OldStamp { age } => {
                            prop_assert!(*age > timing.stale);
                            prop_assert_eq!(now.wall.duration_since(observed.refreshed_at).ok(), Some(*age));
                        }
                        StaleReason::Unchanged { for_ } => {
                            prop_assert!(*for_ >= timing.stale);
                            let (_, _, since) = first_seen
                                .iter()
                                .find(|(i, s, _)| *i == observed.identity && *s == observed.refreshed_at)
                                .expect("seen before");
                            prop_assert!(now.instant.duration_since(*since) >= timing.stale);
                        }
                    }
                    match answer {
                        Answer::Broke(0) | Answer::Absent => Event::Broke(Broke::Absent),
                        Answer::Broke(1) | Answer::CreateWins => Event::Broke(Broke::Broken),
                        _ => Event::Broke(Broke::Changed),
                    }
                }
                (Action::Sleep(d), _) => {
                    prop_assert!(!d.is_zero() || now.instant >= deadline, "no zero sleep before the deadline");
                    prop_assert!(*d <= timing.poll, "never longer than poll: {d:?}");
                    prop_assert!(now.instant + *d <= deadline, "never past the deadline");
                    now.wall += *d;
                    now.instant += *d;
                    steps_without_sleep = 0;
                    // Sometimes a release notification ends the sleep.
                    if advance_ms % 3 == 0 { Event::Notified } else { Event::Woke }
                }
            };
            let exists_after_notification =
                matches!(event, Event::Created(Created::Exists)) && previous_notified;
            previous_notified = matches!(event, Event::Notified);
            if !matches!(event, Event::Woke | Event::Notified) {
                steps_without_sleep += 1;
                prop_assert!(steps_without_sleep <= MAX_STEPS_WITHOUT_SLEEP + 1, "it spins");
            }
            // Time passes during backend steps too.
            let step = Duration::from_millis(advance_ms);
            now.wall += step;
            now.instant += step;
            let created = matches!(event, Event::Created(Created::Created));
            action = machine.next(event, now);
            if created {
                prop_assert_eq!(&action, &Action::Done(Outcome::Acquired));
            }
            if exists_after_notification {
                // Whoever won the race is looked at, so that its death is
                // watched too (or the deadline ends the wait).
                prop_assert!(
                    matches!(action, Action::Inspect | Action::Done(Outcome::TimedOut { .. })),
                    "did not look at the winner of a race after a release: {action:?}"
                );
            }
            if let Action::Done(Outcome::TimedOut { holder, waited }) = &action {
                prop_assert!(now.instant >= deadline, "gave up early");
                prop_assert_eq!(*waited, now.instant - start.instant);
                prop_assert_eq!(holder, &last_holder);
            }
        }
    }
}
