//! Helpers shared by the simulator's tests.
#![allow(dead_code, unreachable_pub)]

use heldlock_sim::shrink::{Shrunk, Target, shrink};
use heldlock_sim::{Class, Invariant, RunOptions, RunReport, SimConfig, Violation, run};

/// Threads for campaigns in tests: at most two (the machine is shared).
pub fn jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(2))
}

/// Runs seeds `0..limit` of `config` until one shows a finding of `class`
/// (and, if given, of `invariant`); returns that seed's report.
pub fn first_finding(
    config: &SimConfig,
    limit: u64,
    class: Class,
    invariant: Option<Invariant>,
) -> Option<RunReport> {
    (0..limit)
        .map(|seed| run(config, seed, &RunOptions::default()))
        .find(|report| {
            report
                .violations
                .iter()
                .any(|v| v.class == class && invariant.is_none_or(|i| v.invariant == i))
        })
}

/// Prints the finding of `report` and its replay command, and (with
/// `HELDLOCK_SIM_SHRINK=1`) its shrunk schedule, what a failing campaign
/// would show. Shrinking replays the seed hundreds of times (35 s for one
/// safeguard's finding), so the suite leaves it to the replay command and
/// to the one test of the shrinker itself ([`shrinks`]).
pub fn show(config: &SimConfig, report: &RunReport, class: Class, invariant: Option<Invariant>) {
    let Some(v) = report
        .violations
        .iter()
        .find(|v| v.class == class && invariant.is_none_or(|i| v.invariant == i))
    else {
        return;
    };
    println!("seed {}: {v}", report.seed);
    println!("  {}", report.profile);
    println!("  replay: {} --shrink", config.replay_command(report.seed));
    if std::env::var("HELDLOCK_SIM_SHRINK").as_deref() == Ok("1") {
        println!("{}", shrinks(config, report, v));
    }
}

/// Shrinks the finding `v` of `report` and checks that the shrunk schedule
/// still shows it, no later and with no more faults than the original.
pub fn shrinks(config: &SimConfig, report: &RunReport, v: &Violation) -> Shrunk {
    let shrunk = shrink(config, report.seed, None, &Target::like(v));
    assert!(
        shrunk
            .violation
            .as_ref()
            .is_some_and(|found| found.invariant == v.invariant),
        "the shrunk schedule lost the finding: {shrunk}"
    );
    assert!(
        shrunk.after.0 <= shrunk.before.0 && shrunk.after.1 <= shrunk.before.1,
        "shrinking made it longer: {shrunk}"
    );
    shrunk
}
