//! The race the simulator found in `break_if_unchanged`, now closed:
//! between the re-verify and the rename, another contender broke the same
//! stale lock and created a fresh one; the rename moved the fresh one aside;
//! a third contender created in the empty path before the `link` could put
//! it back, and the displaced holder ran on until its next ownership check.
//!
//! It needed no fault at all (no pause, no crash, no I/O error): only a
//! stale lock of a dead process at the start and three contenders. The break
//! marker (an `O_EXCL` file named after the observed instance, held from the
//! last look to the unlink) closes it; with the marker switched off, the
//! simulator finds it again.

mod support;

use heldlock_sim::{Class, Faults, SimConfig};

/// Three contenders, each on a host of its own (one host's kernel locks and
/// sweeps shift the schedules so that 2,000 seeds no longer reach the race).
fn fault_free() -> SimConfig {
    SimConfig {
        faults: Faults::NONE,
        hosts: 3,
        initial_lock: Some(true),
        ..SimConfig::default()
    }
}

#[test]
fn the_check_then_rename_race_is_closed_by_the_break_marker() {
    // 600 seeds here; `cargo xtask ci` runs 5,000 in a release build.
    let config = fault_free();
    let found = (0..600)
        .map(|seed| heldlock_sim::run(&config, seed, &heldlock_sim::RunOptions::default()))
        .find(|report| {
            report
                .violations
                .iter()
                .any(|v| matches!(v.class, Class::KnownRace | Class::Real))
        });
    if let Some(report) = found {
        let class = if report.first(Class::KnownRace).is_some() {
            Class::KnownRace
        } else {
            Class::Real
        };
        support::show(&config, &report, class, None);
        panic!(
            "the two-breaker race is back ({class:?}): {:?}",
            report.violations
        );
    }
}

/// With the wall-clock rule off (clocks up to 6 s apart), a breaker whose
/// clock ran ahead took another breaker's 4 ms old marker for an abandoned
/// one, replaced it, and both broke the same stale lock: two holders. Break
/// markers now expire by the wall clock only where the rule trusts it.
#[test]
fn a_clock_ahead_never_expires_a_live_breakers_marker() {
    let config = SimConfig {
        contenders: 3,
        ..SimConfig::default()
    };
    let report = heldlock_sim::run(&config, 83_132, &heldlock_sim::RunOptions::default());
    assert!(
        report.violations.iter().all(|v| v.class == Class::Excused),
        "{:?}",
        report.violations
    );
}

#[cfg(feature = "safeguard-switches")]
#[test]
fn without_the_break_marker_the_race_is_found_without_any_fault() {
    let config = SimConfig {
        safeguards: heldlock_fs::Safeguards {
            break_marker: false,
            ..heldlock_fs::Safeguards::default()
        },
        ..fault_free()
    };
    // The race shows as the known race (an overlap, a lock moved away) or,
    // when its displaced lock is put back after its holder finished, as a
    // lock left behind.
    let found = support::first_finding(&config, 2_000, Class::KnownRace, None)
        .or_else(|| support::first_finding(&config, 2_000, Class::Real, None));
    let Some(report) = found else {
        panic!(
            "with the break marker off, no race in 2000 fault-free seeds: the simulator is blind to it"
        );
    };
    let faults: u64 = report
        .counters
        .iter()
        .filter(|(name, _)| {
            ["crash", "pause", "io", "clock", "intruder"]
                .iter()
                .any(|k| name.starts_with(k))
        })
        .map(|(_, n)| n)
        .sum();
    assert_eq!(faults, 0, "{:?}", report.counters);
    let class = if report.first(Class::KnownRace).is_some() {
        Class::KnownRace
    } else {
        Class::Real
    };
    support::show(&config, &report, class, None);
}
