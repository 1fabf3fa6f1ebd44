//! A contender's shorter stale age never breaks a live holder: every record
//! declares its holder's `stale` (`stale_ms=`), and a contender judges by the
//! longer of its own and the declared one, up to `max_declared_stale`.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::executor::block_on;
use heldlock_core::stale::{Now, StaleJudge, Verdict};
use heldlock_core::{
    Holder, Identity, Lock, LockBackend, LockOptions, LockRecord, ManualClock, MemoryBackend,
    Observed, Timing,
};
use proptest::prelude::*;

fn declaring(stale: Option<Duration>, at: SystemTime) -> LockRecord {
    let mut record = LockRecord::for_this_process(at);
    if let Some(stale) = stale {
        let millis = u64::try_from(stale.as_millis()).unwrap();
        record
            .fields
            .push((LockRecord::STALE_FIELD.to_owned(), millis.to_string()));
    }
    record
}

fn timing(own: Duration, cap: Duration, skew: Duration) -> Timing {
    LockOptions::new(own)
        .max_declared_stale(cap)
        .max_clock_skew(skew)
        .validate()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4_000, ..ProptestConfig::default() })]

    /// Both rules (old stamp on first sight, unchanged for long enough)
    /// judge by `max(own, min(declared, cap))`, and by `own` alone when
    /// nothing is declared.
    #[test]
    fn the_longer_of_own_and_declared_decides(
        own_ms in 1u64..60_000,
        declared_ms in proptest::option::of(1u64..7_200_000),
        cap_ms in 1_000u64..3_600_000,
        skew_ms in 0u64..5_000,
        age_ms in 0u64..10_800_000,
    ) {
        let own = Duration::from_millis(own_ms);
        let cap = Duration::from_millis(cap_ms);
        let skew = Duration::from_millis(skew_ms);
        let timing = timing(own, cap, skew);
        let effective = declared_ms
            .map_or(own, |d| own.max(Duration::from_millis(d).min(cap)));
        let now = Now { wall: SystemTime::now(), instant: Instant::now() };
        let stamp = now.wall - Duration::from_millis(age_ms);
        let record = declaring(declared_ms.map(Duration::from_millis), stamp);
        let observed = Observed::new(Holder::Record(record), Identity::new(vec![1]), stamp);

        let mut judge = StaleJudge::new();
        let first = judge.judge(&observed, now, &timing);
        let old = Duration::from_millis(age_ms) > effective + skew;
        prop_assert_eq!(matches!(first, Verdict::Stale(_)), old);

        // The unchanged rule, immune to clocks: the same lock seen again
        // after `watched`, with the wall clock rule out of play.
        let mut timing = timing;
        timing.wall_clock_rule = false;
        let mut judge = StaleJudge::new();
        let seen = judge.judge(&observed, now, &timing);
        prop_assert!(!matches!(seen, Verdict::Stale(_)), "first sight, no wall clock: {:?}", seen);
        let watched = Duration::from_millis(age_ms);
        let later = Now { wall: now.wall + watched, instant: now.instant + watched };
        let again = judge.judge(&observed, later, &timing);
        prop_assert_eq!(matches!(again, Verdict::Stale(_)), watched >= effective);
    }

    /// A lock the backend cannot tell from somebody's file is never stale.
    #[test]
    fn an_unbreakable_observation_is_never_stale(age_s in 0u64..1_000_000) {
        let timing = timing(Duration::from_secs(1), Duration::from_secs(60), Duration::ZERO);
        let now = Now { wall: SystemTime::now(), instant: Instant::now() };
        let stamp = now.wall - Duration::from_secs(age_s);
        let observed = Observed::new(
            Holder::Foreign { summary: "<an unreadable file>".into() },
            Identity::new(vec![2]),
            stamp,
        )
        .with_breakable(false);
        let mut judge = StaleJudge::new();
        prop_assert_eq!(judge.judge(&observed, now, &timing), Verdict::Fresh);
        let later = Now { wall: now.wall, instant: now.instant + Duration::from_secs(age_s) };
        prop_assert_eq!(judge.judge(&observed, later, &timing), Verdict::Fresh);
    }
}

/// The repro, on the driver: a holder that declared 20 s is not
/// broken by a contender whose own `stale` is 1 s, two seconds after its
/// last heartbeat; it is once its own 20 s have passed.
#[test]
fn a_contender_with_a_shorter_stale_waits_out_the_declared_one() {
    let clock = ManualClock::new();
    let shared = MemoryBackend::new("declared");
    let holder = Lock::new(
        Arc::new(shared.clone()),
        Arc::new(clock.clone()),
        LockOptions::new(Duration::from_secs(20)),
    )
    .unwrap();
    let held = block_on(holder.acquire()).unwrap();
    assert_eq!(
        held.record().declared_stale(),
        Some(Duration::from_secs(20))
    );
    // The holder's heartbeat never runs: it is as if paused.
    std::mem::forget(held);
    let contender = Lock::new(
        Arc::new(shared.clone()),
        Arc::new(clock.clone()),
        LockOptions::new(Duration::from_secs(1)),
    )
    .unwrap();
    clock.advance(Duration::from_secs(2));
    assert!(block_on(contender.try_acquire()).unwrap().is_none());
    clock.advance(Duration::from_secs(17));
    assert!(block_on(contender.try_acquire()).unwrap().is_none());
    clock.advance(Duration::from_secs(2));
    let taken = block_on(contender.try_acquire()).unwrap();
    assert!(taken.is_some(), "past the declared 20 s the lock is stale");
    assert!(block_on(shared.inspect()).is_ok());
}

/// A corrupt or hostile declaration counts only up to the cap.
#[test]
fn a_declared_stale_beyond_the_cap_counts_as_the_cap() {
    let clock = ManualClock::new();
    let shared = MemoryBackend::new("capped");
    let record = declaring(Some(Duration::from_secs(365 * 86_400)), clock_now(&clock));
    assert_eq!(
        block_on(shared.try_create(&record)).unwrap(),
        heldlock_core::Created::Created
    );
    let contender = Lock::new(
        Arc::new(shared.clone()),
        Arc::new(clock.clone()),
        LockOptions::new(Duration::from_secs(1)).max_declared_stale(Duration::from_secs(60)),
    )
    .unwrap();
    clock.advance(Duration::from_secs(59));
    assert!(block_on(contender.try_acquire()).unwrap().is_none());
    clock.advance(Duration::from_secs(2));
    assert!(block_on(contender.try_acquire()).unwrap().is_some());
}

fn clock_now(clock: &ManualClock) -> SystemTime {
    use heldlock_core::Clock;
    clock.now()
}
