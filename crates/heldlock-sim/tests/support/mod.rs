//! Helpers shared by the simulator's tests.
#![allow(dead_code, unreachable_pub)]

use heldlock_sim::shrink::{Target, shrink};
use heldlock_sim::{Class, Invariant, RunOptions, RunReport, SimConfig, run};

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

/// Prints the finding of `report`, its replay command and its shrunk
/// schedule (what a failing campaign would show).
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
    let shrunk = shrink(config, report.seed, None, &Target::like(v));
    println!("{shrunk}");
}
