//! The checker can fail: with any one safeguard of the protocol switched
//! off (heldlock-fs's test-only `safeguard-switches`), the simulator finds a
//! schedule that violates an invariant within a bounded number of seeds,
//! and prints it (seed, replay command, shrunk schedule).
#![cfg(feature = "safeguard-switches")]

mod support;

use heldlock_fs::{Restore, Safeguards};
use heldlock_sim::{Class, Faults, Invariant, SimConfig, Strategy};

fn off(safeguards: Safeguards) -> SimConfig {
    SimConfig {
        safeguards,
        ..SimConfig::default()
    }
}

/// Finds a real violation of one of `expected` within `limit` seeds.
fn detects(name: &str, config: SimConfig, limit: u64, expected: &[Invariant]) {
    let found = support::first_finding(&config, limit, Class::Real, None);
    let Some(report) = found else {
        panic!("with {name} off, no real violation in {limit} seeds: the simulator is blind to it");
    };
    let first = report.first(Class::Real).map(|v| v.invariant);
    println!("{name} off: found at seed {}", report.seed);
    support::show(&config, &report, Class::Real, first);
    assert!(
        first.is_some_and(|i| expected.contains(&i)),
        "unexpected kind of finding: {first:?}"
    );
}

#[test]
fn without_the_release_precheck_a_releaser_that_lost_its_lock_moves_the_new_one() {
    // Needs a holder that lost its lock (a long pause) releasing while a
    // third contender polls: many contenders, many long pauses, and other
    // hosts (on its own host, a paused holder's kernel lock keeps it).
    let config = SimConfig {
        contenders: 6,
        hosts: 6,
        faults: Faults {
            long_pause: true,
            ..Faults::NONE
        },
        fault_rate: 600,
        strategy: Strategy::Random,
        ..off(Safeguards {
            release_precheck: false,
            ..Safeguards::default()
        })
    };
    detects(
        "release-precheck",
        config,
        600,
        &[
            Invariant::ForeignRemoval,
            Invariant::MutualExclusion,
            Invariant::LeftBehind,
        ],
    );
}

#[test]
fn without_the_reverify_a_breaker_moves_a_lock_it_never_saw() {
    let config = off(Safeguards {
        reverify_before_break: false,
        ..Safeguards::default()
    });
    detects(
        "reverify-before-break",
        config,
        500,
        &[Invariant::ForeignRemoval, Invariant::MutualExclusion],
    );
}

#[test]
fn restoring_by_rename_destroys_the_lock_created_meanwhile() {
    // A lock moved by mistake needs restoring when breakers are not
    // excluded from each other: without the break marker, as with a
    // reference-implementation process breaking beside heldlock.
    let config = off(Safeguards {
        restore: Restore::RenameBack,
        break_marker: false,
        ..Safeguards::default()
    });
    detects(
        "restore-with-link (rename back instead)",
        config,
        1_000,
        &[Invariant::ForeignRemoval, Invariant::MutualExclusion],
    );
}

#[test]
fn not_restoring_at_all_destroys_the_lock_moved_by_mistake() {
    // A lock moved by mistake needs restoring when breakers are not
    // excluded from each other: without the break marker, as with a
    // reference-implementation process breaking beside heldlock.
    let config = off(Safeguards {
        restore: Restore::Unlink,
        break_marker: false,
        ..Safeguards::default()
    });
    detects(
        "restore-with-link (unlink instead)",
        config,
        500,
        &[Invariant::ForeignRemoval, Invariant::MutualExclusion],
    );
}

#[test]
fn content_only_ownership_keeps_refreshing_a_copy_that_is_not_ours() {
    // The record alone cannot tell our lock from a copy of it: an outside
    // tool replacing the file with a copy (new inode, same bytes) is needed.
    let config = SimConfig {
        faults: Faults {
            intruder: true,
            ..Faults::NONE
        },
        fault_rate: 400,
        ..off(Safeguards {
            inode_ownership: false,
            ..Safeguards::default()
        })
    };
    detects("inode-ownership", config, 500, &[Invariant::RefreshTruth]);
}

#[test]
fn without_the_recheck_after_rename_a_breaker_unlinks_a_fresh_lock() {
    let config = off(Safeguards {
        recheck_after_rename: false,
        ..Safeguards::default()
    });
    detects(
        "recheck-after-rename",
        config,
        500,
        &[Invariant::ForeignRemoval, Invariant::MutualExclusion],
    );
}
