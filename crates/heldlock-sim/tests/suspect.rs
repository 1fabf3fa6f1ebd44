//! The suspected race in `break_if_unchanged`: between the re-verify and
//! the rename, another contender breaks the same stale lock and creates a
//! fresh one; the rename moves the fresh one aside; a third contender
//! creates in the empty path before the `link` can put it back. The
//! displaced holder runs on until its next ownership check.
//!
//! The simulator finds it with no fault at all (no pause, no crash, no I/O
//! error): only a stale lock of a dead process at the start and three
//! contenders. The checker classifies it as the known race, so that
//! campaigns report it without failing; this test pins it down.

mod support;

use heldlock_sim::{Class, Faults, Invariant, SimConfig};

#[test]
fn the_check_then_rename_race_breaks_exclusion_without_any_fault() {
    let config = SimConfig {
        faults: Faults::NONE,
        initial_lock: Some(true),
        ..SimConfig::default()
    };
    let found = support::first_finding(
        &config,
        2_000,
        Class::KnownRace,
        Some(Invariant::MutualExclusion),
    );
    let Some(report) = found else {
        panic!(
            "the known race was not found in 2000 fault-free seeds; has it been fixed? update docs/testing.md"
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
    support::show(
        &config,
        &report,
        Class::KnownRace,
        Some(Invariant::MutualExclusion),
    );
    assert!(report.real().next().is_none(), "{:?}", report.violations);
}
