//! Contenders that disagree on `stale`: every record declares its holder's,
//! and a contender judges by the longer of its own and the declared one, so
//! a contender with a quarter of the stale age never breaks a live holder.
//! The checker can tell: with declarations ignored (a cap of 1 ms), the
//! same campaign finds holders broken while they ran.

mod support;

use std::time::Duration;

use heldlock_sim::campaign::{Campaign, run_campaign};
use heldlock_sim::{Class, Faults, Invariant, SimConfig};

/// Each contender on a host of its own: on one host, a holder's kernel lock
/// proves it alive to every waiter, whatever stale age they judge by.
fn mixed() -> SimConfig {
    SimConfig {
        contenders: 4,
        hosts: 4,
        mixed_stale: true,
        ..SimConfig::default()
    }
}

#[test]
fn contenders_with_shorter_stale_ages_never_break_a_live_holder() {
    let config = mixed();
    let report = run_campaign(&Campaign {
        config: config.clone(),
        first: 0,
        seeds: 600,
        jobs: support::jobs(),
    });
    println!("campaign {}:\n{report}", config.to_args());
    for failure in &report.failures {
        println!(
            "seed {}: {}\n  replay: {} --shrink",
            failure.seed,
            failure.violation,
            config.replay_command(failure.seed)
        );
    }
    assert!(report.failures.is_empty(), "violations, see above");
}

#[test]
fn ignoring_the_declared_stale_is_caught() {
    // No faults at all: a live holder refreshing every stale/3 is broken by
    // a contender that judges it by stale/4.
    let config = SimConfig {
        faults: Faults::NONE,
        declared_stale_cap: Some(Duration::from_millis(1)),
        ..mixed()
    };
    let found = support::first_finding(&config, 400, Class::Real, None);
    let Some(report) = found else {
        panic!("declarations ignored, yet no violation in 400 seeds: the checker is blind");
    };
    let first = report.first(Class::Real).map(|v| v.invariant);
    println!("found at seed {}: {first:?}", report.seed);
    // Breaking a live holder's lock is seen at the break (its lock file
    // removed by another) or at the overlap that follows.
    assert!(
        matches!(
            first,
            Some(Invariant::ForeignRemoval | Invariant::MutualExclusion)
        ),
        "{first:?}"
    );
    // The one test of the shrinker in the default suite: the shrunk
    // schedule still shows the finding, no later and with no more faults.
    if let Some(v) = report.first(Class::Real) {
        println!("{}", support::shrinks(&config, &report, v));
    }
}
