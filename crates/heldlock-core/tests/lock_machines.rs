//! The pure lock machines, stepped with virtual time, and option validation.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant, SystemTime};

use heldlock_core::acquire::{
    Acquire, Action, Event, MAX_STEPS_WITHOUT_SLEEP, MIN_BACKOFF, Outcome, Waiting,
};
use heldlock_core::heartbeat::{Beat, Heartbeat};
use heldlock_core::stale::{Now, StaleJudge, StaleReason, Verdict};
use heldlock_core::{
    Broke, Created, Holder, Identity, Inspection, LockOptions, LockRecord, Observed, OptionsError,
    Refreshed, Timing,
};

const MS: Duration = Duration::from_millis(1);

fn timing(stale_ms: u64) -> Timing {
    LockOptions::new(Duration::from_millis(stale_ms))
        .validate()
        .unwrap()
}

struct Clock(Now);

impl Clock {
    fn new() -> Self {
        Clock(Now {
            wall: SystemTime::now(),
            instant: Instant::now(),
        })
    }
    fn advance(&mut self, by: Duration) -> Now {
        self.0.wall += by;
        self.0.instant += by;
        self.0
    }
}

fn observed(identity: u8, refreshed_at: SystemTime) -> Observed {
    Observed::new(
        Holder::Record(LockRecord::for_this_process(refreshed_at)),
        Identity::new(vec![identity]),
        refreshed_at,
    )
}

#[test]
fn acquire_created_is_done() {
    let clock = Clock::new();
    let mut m = Acquire::new(timing(5000), 5000 * MS, clock.0, Waiting::Notified);
    assert_eq!(m.start(), Action::TryCreate);
    assert_eq!(
        m.next(Event::Created(Created::Created), clock.0),
        Action::Done(Outcome::Acquired)
    );
}

#[test]
fn acquire_fresh_lock_backs_off_then_times_out_at_the_deadline() {
    let mut clock = Clock::new();
    let t = timing(5000);
    let mut m = Acquire::new(t, 120 * MS, clock.0, Waiting::Notified);
    assert_eq!(m.start(), Action::TryCreate);
    let fresh = observed(1, clock.0.wall);
    assert_eq!(
        m.next(Event::Created(Created::Exists), clock.0),
        Action::Inspect
    );
    assert_eq!(
        m.next(
            Event::Inspected(Inspection::Present(fresh.clone())),
            clock.0
        ),
        Action::Sleep(50 * MS)
    );
    let now = clock.advance(100 * MS);
    assert_eq!(m.next(Event::Woke, now), Action::TryCreate);
    assert_eq!(
        m.next(Event::Created(Created::Exists), now),
        Action::Inspect
    );
    // 20 ms left: the sleep is capped to the time left.
    assert_eq!(
        m.next(Event::Inspected(Inspection::Present(fresh.clone())), now),
        Action::Sleep(20 * MS)
    );
    let now = clock.advance(20 * MS);
    assert_eq!(m.next(Event::Woke, now), Action::TryCreate);
    assert_eq!(
        m.next(Event::Created(Created::Exists), now),
        Action::Inspect
    );
    match m.next(Event::Inspected(Inspection::Present(fresh)), now) {
        Action::Done(Outcome::TimedOut { holder, waited }) => {
            assert!(holder.is_some());
            assert_eq!(waited, 120 * MS);
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[test]
fn behavior_22_poll_larger_than_the_wait_is_capped() {
    let clock = Clock::new();
    let t = LockOptions::new(Duration::from_secs(5))
        .poll(Duration::from_secs(60))
        .validate()
        .unwrap();
    let mut m = Acquire::new(t, 200 * MS, clock.0, Waiting::Notified);
    assert_eq!(m.start(), Action::TryCreate);
    assert_eq!(
        m.next(Event::Created(Created::Exists), clock.0),
        Action::Inspect
    );
    let action = m.next(
        Event::Inspected(Inspection::Present(observed(1, clock.0.wall))),
        clock.0,
    );
    assert_eq!(action, Action::Sleep(200 * MS));
}

#[test]
fn acquire_breaks_an_old_stamp_then_retries_create() {
    let clock = Clock::new();
    let mut m = Acquire::new(timing(5000), 5000 * MS, clock.0, Waiting::Notified);
    assert_eq!(m.start(), Action::TryCreate);
    let old = observed(1, clock.0.wall - Duration::from_secs(60));
    assert_eq!(
        m.next(Event::Created(Created::Exists), clock.0),
        Action::Inspect
    );
    match m.next(Event::Inspected(Inspection::Present(old.clone())), clock.0) {
        Action::Break {
            observed,
            reason: StaleReason::OldStamp { age },
        } => {
            assert_eq!(observed, old);
            assert_eq!(age, Duration::from_secs(60));
        }
        other => panic!("expected a break, got {other:?}"),
    }
    assert_eq!(
        m.next(Event::Broke(Broke::Broken), clock.0),
        Action::TryCreate
    );
}

#[test]
fn acquire_re_inspects_when_the_break_found_a_change() {
    let clock = Clock::new();
    let mut m = Acquire::new(timing(5000), 5000 * MS, clock.0, Waiting::Notified);
    assert_eq!(m.start(), Action::TryCreate);
    assert_eq!(
        m.next(Event::Created(Created::Exists), clock.0),
        Action::Inspect
    );
    let broken = m.next(
        Event::Inspected(Inspection::Present(observed(
            1,
            clock.0.wall - Duration::from_secs(60),
        ))),
        clock.0,
    );
    assert!(
        matches!(
            broken,
            Action::Break {
                reason: StaleReason::OldStamp { .. },
                ..
            }
        ),
        "expected a break, got {broken:?}"
    );
    assert_eq!(
        m.next(Event::Broke(Broke::Changed), clock.0),
        Action::Inspect
    );
}

#[test]
fn acquire_never_spins_when_the_lock_keeps_vanishing() {
    let clock = Clock::new();
    let mut m = Acquire::new(timing(5000), 5000 * MS, clock.0, Waiting::Notified);
    let mut action = m.start();
    let mut steps = 0;
    while !matches!(action, Action::Sleep(_)) {
        let event = match action {
            Action::TryCreate => Event::Created(Created::Exists),
            Action::Inspect => Event::Inspected(Inspection::Absent),
            other => panic!("unexpected {other:?}"),
        };
        action = m.next(event, clock.0);
        steps += 1;
        assert!(steps <= MAX_STEPS_WITHOUT_SLEEP + 1, "the waiter spins");
    }
}

#[test]
fn stale_by_wall_clock_allows_for_skew() {
    let clock = Clock::new();
    let t = LockOptions::new(5000 * MS)
        .max_clock_skew(2000 * MS)
        .validate()
        .unwrap();
    let mut judge = StaleJudge::new();
    let six_seconds_old = observed(1, clock.0.wall - 6000 * MS);
    assert_eq!(
        judge.judge(&six_seconds_old, clock.0, &t),
        Verdict::Fresh,
        "within stale + skew"
    );
    let eight_seconds_old = observed(2, clock.0.wall - 8000 * MS);
    assert!(matches!(
        judge.judge(&eight_seconds_old, clock.0, &t),
        Verdict::Stale(StaleReason::OldStamp { .. })
    ));
}

#[test]
fn a_stamp_from_the_future_is_fresh_by_the_wall_clock() {
    let clock = Clock::new();
    let mut judge = StaleJudge::new();
    let future = observed(1, clock.0.wall + Duration::from_secs(3600));
    assert_eq!(judge.judge(&future, clock.0, &timing(5000)), Verdict::Fresh);
}

#[test]
fn unchanged_rule_needs_a_full_stale_of_watching_and_ignores_the_wall_clock() {
    let mut clock = Clock::new();
    let t = LockOptions::new(5000 * MS)
        .wall_clock_rule(false)
        .validate()
        .unwrap();
    let mut judge = StaleJudge::new();
    // Ancient by the wall clock, but the wall-clock rule is off.
    let ancient = observed(1, clock.0.wall - Duration::from_secs(3600));
    assert_eq!(judge.judge(&ancient, clock.0, &t), Verdict::Fresh);
    let now = clock.advance(4999 * MS);
    assert_eq!(judge.judge(&ancient, now, &t), Verdict::Fresh);
    let now = clock.advance(MS);
    assert!(matches!(
        judge.judge(&ancient, now, &t),
        Verdict::Stale(StaleReason::Unchanged { .. })
    ));
}

#[test]
fn unchanged_rule_restarts_when_the_stamp_or_identity_changes() {
    let mut clock = Clock::new();
    let t = LockOptions::new(5000 * MS)
        .wall_clock_rule(false)
        .validate()
        .unwrap();
    let mut judge = StaleJudge::new();
    let first = observed(1, clock.0.wall);
    assert_eq!(judge.judge(&first, clock.0, &t), Verdict::Fresh);
    let now = clock.advance(4000 * MS);
    let refreshed = observed(1, now.wall);
    assert_eq!(judge.judge(&refreshed, now, &t), Verdict::Fresh);
    let now = clock.advance(4000 * MS);
    assert_eq!(
        judge.judge(&refreshed, now, &t),
        Verdict::Fresh,
        "only 4 s since the refresh"
    );
    let replaced = observed(2, refreshed.refreshed_at);
    assert_eq!(
        judge.judge(&replaced, now, &t),
        Verdict::Fresh,
        "a new identity restarts the watch"
    );
}

#[test]
fn heartbeat_policy() {
    let t = timing(3000); // heartbeat 1 s
    let start = Instant::now();
    let at = |ms: u64| start + Duration::from_millis(ms);
    let mut hb = Heartbeat::new(t, start);
    assert_eq!(hb.first(start), t.heartbeat);
    assert_eq!(
        hb.after(Some(Refreshed::Refreshed), at(1000), at(1001)),
        Beat::Again(t.heartbeat - Duration::from_millis(1)),
        "the next beat is a heartbeat after this refresh's stamp"
    );
    // Stamped at 1000: peers may break from 4000 on.
    assert_eq!(
        hb.after(None, at(2000), at(2001)),
        Beat::Again(t.heartbeat),
        "a beat at 3001 is in time"
    );
    assert_eq!(
        hb.after(None, at(3000), at(3000)),
        Beat::Lost,
        "a beat at 4000 would be too late"
    );
    let mut hb = Heartbeat::new(t, start);
    assert_eq!(hb.after(Some(Refreshed::Lost), at(1), at(1)), Beat::Lost);
}

#[test]
fn heartbeat_loss_is_declared_before_any_peer_may_break() {
    // Beats come at most `heartbeat` apart (a longer pause is outside the
    // lease model), so the first failure after a stamp falls within one
    // heartbeat of it. Whenever it falls, the loss is declared while the
    // last stamp is still younger than `stale`.
    let t = timing(3000);
    let start = Instant::now();
    for failure_ms in (1..=1000).step_by(7) {
        let mut hb = Heartbeat::new(t, start);
        assert!(
            matches!(
                hb.after(Some(Refreshed::Refreshed), start, start),
                Beat::Again(_)
            ),
            "a refreshed stamp beats again"
        );
        let mut now = start + Duration::from_millis(failure_ms);
        loop {
            match hb.after(None, now, now) {
                Beat::Lost => {
                    assert!(
                        now < start + t.stale,
                        "declared at {:?} after the stamp",
                        now - start
                    );
                    break;
                }
                Beat::Again(wait) => now += wait,
            }
        }
    }
}

#[test]
fn behavior_19_invalid_timings_are_refused_naming_option_range_value_and_default() {
    let zero_stale = LockOptions::new(Duration::ZERO).validate().unwrap_err();
    let message = zero_stale.to_string();
    assert!(
        message.contains("`stale`") && message.contains("more than 0") && message.contains("0ns"),
        "{message}"
    );
    assert!(message.contains("no default"), "{message}");

    for (options, option, default) in [
        (
            LockOptions::new(5000 * MS).max_wait(Duration::ZERO),
            "max_wait",
            "5s",
        ),
        (
            LockOptions::new(5000 * MS).poll(Duration::ZERO),
            "poll",
            "50ms",
        ),
        (
            LockOptions::new(6000 * MS).heartbeat(Duration::ZERO),
            "heartbeat",
            "2s",
        ),
    ] {
        let error = options.validate().unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, OptionsError::OutOfRange { .. }));
        assert!(message.contains(&format!("`{option}`")), "{message}");
        assert!(message.contains("at most 365 days"), "{message}");
        assert!(message.contains("got 0ns"), "{message}");
        assert!(
            message.contains(&format!("default of {default}")),
            "{message}"
        );
    }
}

#[test]
fn behavior_20_absurd_durations_that_would_overflow_deadlines_are_refused() {
    for options in [
        LockOptions::new(Duration::MAX),
        LockOptions::new(5000 * MS).max_wait(Duration::MAX),
        LockOptions::new(5000 * MS).poll(Duration::from_secs(400 * 24 * 3600)),
        LockOptions::new(5000 * MS).max_clock_skew(Duration::MAX),
    ] {
        assert!(
            matches!(options.validate(), Err(OptionsError::OutOfRange { .. })),
            "{options:?}"
        );
    }
}

#[test]
fn behavior_23_heartbeat_not_below_stale_is_refused() {
    for heartbeat in [300 * MS, 301 * MS] {
        let error = LockOptions::new(300 * MS)
            .heartbeat(heartbeat)
            .validate()
            .unwrap_err();
        assert!(matches!(error, OptionsError::HeartbeatNotBelowStale { .. }));
        let message = error.to_string();
        assert!(
            message.contains("`heartbeat`") && message.contains("shorter than `stale`"),
            "{message}"
        );
        assert!(message.contains("default of 100ms"), "{message}");
    }
}

#[test]
fn default_heartbeat_is_a_third_of_stale_with_a_floor() {
    assert_eq!(timing(30_000).heartbeat, 10_000 * MS);
    assert_eq!(timing(200).heartbeat, 100 * MS);
    assert_eq!(
        timing(150).heartbeat,
        75 * MS,
        "the floor never reaches half of stale"
    );
    assert_eq!(timing(60).heartbeat, 20 * MS);
}

#[test]
fn without_notification_the_backoff_grows_from_one_millisecond_with_jitter() {
    let mut clock = Clock::new();
    let t = timing(5000); // poll 50 ms
    let mut m = Acquire::new(
        t,
        Duration::from_secs(5),
        clock.0,
        Waiting::Backoff { seed: 7 },
    );
    let fresh = observed(1, clock.0.wall);
    assert_eq!(m.start(), Action::TryCreate);
    let mut sleeps = Vec::new();
    for _ in 0..10 {
        let now = clock.0;
        assert_eq!(
            m.next(Event::Created(Created::Exists), now),
            Action::Inspect
        );
        match m.next(Event::Inspected(Inspection::Present(fresh.clone())), now) {
            Action::Sleep(d) => sleeps.push(d),
            other => panic!("expected a sleep, got {other:?}"),
        }
        let now = clock.advance(*sleeps.last().unwrap());
        assert_eq!(m.next(Event::Woke, now), Action::TryCreate);
    }
    for (n, sleep) in sleeps.iter().enumerate() {
        let step = (MIN_BACKOFF * (1 << n)).min(t.poll);
        assert!(
            *sleep >= step / 2 && *sleep <= step,
            "sleep {n} = {sleep:?}, step {step:?}"
        );
    }
    assert!(
        sleeps[0] <= MIN_BACKOFF,
        "the first retry comes within 1 ms"
    );
    assert!(sleeps[9] >= t.poll / 2, "and the backoff reaches poll");
}

#[test]
fn backoff_jitter_differs_between_seeds_and_repeats_for_one_seed() {
    let run = |seed| {
        let clock = Clock::new();
        let mut m = Acquire::new(
            timing(5000),
            Duration::from_secs(5),
            clock.0,
            Waiting::Backoff { seed },
        );
        let fresh = observed(1, clock.0.wall);
        assert_eq!(m.start(), Action::TryCreate);
        (0..6)
            .map(|_| {
                assert_eq!(
                    m.next(Event::Created(Created::Exists), clock.0),
                    Action::Inspect
                );
                let action = m.next(
                    Event::Inspected(Inspection::Present(fresh.clone())),
                    clock.0,
                );
                assert_eq!(m.next(Event::Woke, clock.0), Action::TryCreate);
                action
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

#[test]
fn a_dead_holder_is_broken_at_once() {
    let clock = Clock::new();
    let mut m = Acquire::new(timing(30_000), 5000 * MS, clock.0, Waiting::Notified);
    assert_eq!(m.start(), Action::TryCreate);
    let fresh = observed(1, clock.0.wall);
    assert_eq!(
        m.next(Event::Created(Created::Exists), clock.0),
        Action::Inspect
    );
    match m.next(Event::HolderDead(fresh.clone()), clock.0) {
        Action::Break {
            observed,
            reason: StaleReason::HolderDead,
        } => assert_eq!(observed, fresh),
        other => panic!("expected a break, got {other:?}"),
    }
}
