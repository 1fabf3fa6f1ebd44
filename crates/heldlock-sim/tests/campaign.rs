//! The bounded campaign CI runs, and the simulator's determinism.

mod support;

use std::time::Instant;

use heldlock_sim::campaign::{Campaign, run_campaign};
use heldlock_sim::{Class, RunOptions, SimConfig, run};

/// Seeds of the suite's campaign, per (contenders, hosts). A debug build
/// runs about 100 schedules/s on the shared 2-core machine, so the long
/// campaigns run in `cargo xtask ci`'s release build instead (see
/// docs/testing.md); this one keeps `cargo test` honest on its own.
const CI_SEEDS: [(usize, usize, u64); 2] = [(3, 1, 500), (4, 2, 300)];

/// Every fault kind, every skew mode the option allows, both schedulers:
/// no violation at all, known races and late losses included.
#[test]
fn ci_campaign_finds_no_real_violation() {
    let started = Instant::now();
    for (contenders, hosts, seeds) in CI_SEEDS {
        let config = SimConfig {
            contenders,
            hosts,
            ..SimConfig::default()
        };
        let report = run_campaign(&Campaign {
            config: config.clone(),
            first: 0,
            seeds,
            jobs: support::jobs(),
        });
        println!("campaign {}:\n{report}", config.to_args());
        if let Some(known) = report.known.first() {
            println!(
                "known race in {} seeds, first: seed {}: {}",
                report.known.len(),
                known.seed,
                known.violation
            );
        }
        for failure in &report.failures {
            println!(
                "seed {}: {}\n  replay: {} --shrink",
                failure.seed,
                failure.violation,
                config.replay_command(failure.seed)
            );
        }
        assert!(report.failures.is_empty(), "real violations, see above");
        assert!(
            report.known.is_empty() && report.late.is_empty(),
            "known races or late losses: violations too"
        );
        let exercised = |prefix: &str| report.counters.keys().any(|k| k.starts_with(prefix));
        for fault in [
            "crash.holding",
            "pause.short",
            "pause.long",
            "io.",
            "clock.step",
            "intruder.",
        ] {
            assert!(exercised(fault), "the campaign never exercised {fault}");
        }
    }
    println!("CI campaign took {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let config = SimConfig::default();
    for seed in [3, 4, 1170] {
        let traced = RunOptions {
            trace: true,
            ..RunOptions::default()
        };
        let a = run(&config, seed, &traced);
        let b = run(&config, seed, &traced);
        assert_eq!(a.trace, b.trace, "seed {seed}");
        assert_eq!(a.violations, b.violations);
        // Tracing changes nothing but the output.
        let quiet = run(&config, seed, &RunOptions::default());
        assert_eq!((quiet.steps, quiet.elapsed), (a.steps, a.elapsed));
        assert_eq!(quiet.violations, a.violations);
        assert_eq!(quiet.counters, a.counters);
    }
}

#[test]
fn a_recorded_tape_replays_the_same_run() {
    let config = SimConfig::default();
    for seed in [0, 4, 9] {
        let recorded = run(
            &config,
            seed,
            &RunOptions {
                record: true,
                ..RunOptions::default()
            },
        );
        let tape = recorded.tape.clone().expect("a recorded run has a tape");
        assert!(!tape.is_empty(), "seed {seed}: nothing was recorded");
        let text = tape.to_string();
        let parsed: heldlock_sim::tape::Tape = text.parse().expect("a written tape parses");
        assert_eq!(parsed, tape, "seed {seed}: the tape round-trips");
        let replayed = run(
            &config,
            seed,
            &RunOptions {
                replay: Some(parsed),
                ..RunOptions::default()
            },
        );
        assert_eq!(
            (replayed.steps, replayed.elapsed),
            (recorded.steps, recorded.elapsed)
        );
        assert_eq!(replayed.violations, recorded.violations);
        assert_eq!(replayed.counters, recorded.counters);
    }
}

fn long_pauses(hosts: usize) -> SimConfig {
    SimConfig {
        faults: heldlock_sim::Faults {
            long_pause: true,
            ..heldlock_sim::Faults::NONE
        },
        fault_rate: 400,
        hosts,
        ..SimConfig::default()
    }
}

#[test]
fn long_pauses_are_checked_by_the_lost_rules_instead() {
    // Holders paused longer than `stale - heartbeat` lose their lock to a
    // peer on another host; exclusion is then not promised, but their next
    // refresh must say so, and lost() must fire (both are checked in every
    // run).
    let config = long_pauses(2);
    let report = run_campaign(&Campaign {
        config,
        first: 0,
        seeds: 400,
        jobs: support::jobs(),
    });
    println!("{report}");
    assert!(report.failures.is_empty());
    assert!(report.counters.get("refresh.lost").copied().unwrap_or(0) > 0);
    let excused = report
        .findings
        .iter()
        .filter(|((_, class), _)| *class == Class::Excused)
        .count();
    assert!(excused > 0, "no schedule lost a lock to a long pause");
}

#[test]
fn on_one_host_a_paused_holder_keeps_its_lock_through_its_kernel_lock() {
    // A stopped process is alive: its `flock` proves it to every waiter on
    // its host, which never breaks its lock however long the pause.
    let report = run_campaign(&Campaign {
        config: long_pauses(1),
        first: 0,
        seeds: 200,
        jobs: support::jobs(),
    });
    println!("{report}");
    assert!(report.failures.is_empty());
    assert!(report.counters.get("pause.long").copied().unwrap_or(0) > 0);
    assert!(report.counters.get("flock.held").copied().unwrap_or(0) > 0);
    // Its own lease still expires (its refresh then says `Ok(false)`), but
    // no peer enters while it is stopped: no overlap at all, not even one
    // the lost rules would excuse.
    assert!(
        report.findings.is_empty(),
        "a holder on the waiters' own host lost its lock to a peer: {:?}",
        report.findings
    );
}
