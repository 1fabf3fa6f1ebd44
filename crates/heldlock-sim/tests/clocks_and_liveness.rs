//! Clock skew (within `max_clock_skew`, beyond it, and with the wall-clock
//! rule off) and liveness after crashes.
//!
//! The skew campaigns put every contender on a host of its own: clocks
//! differ between hosts, and on one host a holder's kernel lock proves it
//! alive whatever the clocks say, which would hide what skew does.

mod support;

use std::time::Duration;

use heldlock_sim::campaign::{Campaign, run_campaign};
use heldlock_sim::{Class, Faults, Invariant, SimConfig, Skew};

fn clean(config: SimConfig, seeds: u64) -> heldlock_sim::campaign::CampaignReport {
    let report = run_campaign(&Campaign {
        config: config.clone(),
        first: 0,
        seeds,
        jobs: support::jobs(),
    });
    println!("{}:\n{report}", config.to_args());
    for failure in &report.failures {
        println!("seed {}: {}", failure.seed, failure.violation);
    }
    assert!(report.failures.is_empty());
    report
}

#[test]
fn skew_within_max_clock_skew_keeps_exclusion() {
    let config = SimConfig {
        skew: Skew::Within,
        hosts: 3,
        faults: Faults {
            clock: true,
            pause: true,
            crash: true,
            ..Faults::NONE
        },
        fault_rate: 300,
        ..SimConfig::default()
    };
    let report = clean(config, 250);
    assert!(report.counters.contains_key("clock.step"));
}

#[test]
fn skew_is_harmless_with_the_wall_clock_rule_off() {
    let config = SimConfig {
        skew: Skew::RuleOff,
        hosts: 3,
        faults: Faults {
            clock: true,
            pause: true,
            crash: true,
            ..Faults::NONE
        },
        fault_rate: 300,
        ..SimConfig::default()
    };
    let report = clean(config, 250);
    assert!(report.counters.contains_key("clock.step"));
}

#[test]
fn skew_beyond_max_clock_skew_with_the_wall_clock_rule_on_is_caught() {
    let config = SimConfig {
        skew: Skew::Beyond,
        hosts: 3,
        faults: Faults::NONE,
        ..SimConfig::default()
    };
    let found = support::first_finding(&config, 200, Class::Real, None);
    let Some(report) = found else {
        panic!("clocks 1.5 stale apart with the wall-clock rule on went unnoticed");
    };
    let first = report.first(Class::Real).map(|v| v.invariant);
    support::show(&config, &report, Class::Real, first);
    assert!(matches!(
        first,
        Some(Invariant::MutualExclusion | Invariant::ForeignRemoval)
    ));
}

#[test]
fn a_crashed_holders_lock_is_taken_over_within_stale_plus_poll() {
    let config = SimConfig {
        contenders: 4,
        rounds: 3,
        faults: Faults {
            crash: true,
            ..Faults::NONE
        },
        ..SimConfig::default()
    };
    let report = clean(config, 300);
    let checked = report
        .counters
        .get("liveness.checked")
        .copied()
        .unwrap_or(0);
    assert!(
        checked > 0,
        "no crash of a holder was followed by a quiet wait"
    );
}

#[test]
fn the_liveness_check_can_fail() {
    // Demand the take-over within half of `stale`: impossible, since a
    // crashed holder's stamp is fresh for `stale`.
    let config = SimConfig {
        contenders: 4,
        rounds: 3,
        faults: Faults {
            crash: true,
            ..Faults::NONE
        },
        liveness_bound: Some(Duration::from_millis(500)),
        ..SimConfig::default()
    };
    let found = support::first_finding(&config, 600, Class::Real, Some(Invariant::Liveness));
    let Some(report) = found else {
        panic!("an impossible liveness bound was never reported");
    };
    if let Some(v) = report.first(Class::Real) {
        println!("seed {}: {v}", report.seed);
    }
}
