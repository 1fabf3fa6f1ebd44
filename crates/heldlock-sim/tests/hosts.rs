//! Contenders on several hosts sharing one file system (`--hosts`): each
//! host with its own device numbers, clock, host and boot identity, kernel
//! locks, and (some seeds) files the other hosts cannot read. Break markers
//! expire and the trash sweep runs, with `FileLock`'s settings.

mod support;

use heldlock_sim::campaign::{Campaign, run_campaign};
use heldlock_sim::{Class, Invariant, SimConfig};

fn two_hosts() -> SimConfig {
    SimConfig {
        contenders: 4,
        hosts: 2,
        ..SimConfig::default()
    }
}

#[test]
fn contenders_on_two_hosts_keep_every_invariant() {
    let config = two_hosts();
    let report = run_campaign(&Campaign {
        config: config.clone(),
        first: 0,
        seeds: 400,
        jobs: support::jobs(),
    });
    println!("campaign {}:\n{report}", config.to_args());
    for failure in report
        .failures
        .iter()
        .chain(&report.known)
        .chain(&report.late)
    {
        println!(
            "seed {}: {}\n  replay: {} --shrink",
            failure.seed,
            failure.violation,
            config.replay_command(failure.seed)
        );
    }
    assert!(report.failures.is_empty(), "violations, see above");
    assert!(report.known.is_empty(), "known races, see above");
    assert!(report.late.is_empty(), "late losses, see above");
    // What the hosts bring was exercised: same-host proof of life through
    // the kernel lock, dead holders found by the host probe, the sweep.
    for counter in ["flock.held", "probe.dead", "sweep.readdir", "break.Broken"] {
        let n = report.counters.get(counter).copied().unwrap_or(0);
        assert!(n > 0, "{counter} never happened in 400 seeds");
    }
}

#[test]
fn a_contender_that_breaks_what_it_cannot_read_is_caught() {
    // The protocol honours a lock file it cannot read (`breakable` false);
    // contenders made to break such files as `heldlock break --force` does
    // must show up as `unread-break` violations.
    let config = SimConfig {
        break_unreadable: true,
        ..two_hosts()
    };
    let found = support::first_finding(&config, 600, Class::Real, Some(Invariant::UnreadBreak));
    let Some(report) = found else {
        panic!("unreadable locks broken, yet no unread-break in 600 seeds: the checker is blind");
    };
    support::show(&config, &report, Class::Real, Some(Invariant::UnreadBreak));
    assert!(
        report.profile.contains("private files"),
        "{}",
        report.profile
    );
}
