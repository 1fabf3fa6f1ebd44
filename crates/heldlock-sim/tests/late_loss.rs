//! A finding of the simulator about the heartbeat policy: when a holder's
//! heartbeat refreshes keep failing (I/O errors) while its peers' I/O works,
//! the heartbeat declares the loss only at a beat at least `stale` after the
//! last *successful* refresh, but peers may break the lock once its *stamp*
//! is `stale` old, which comes first (the stamp is taken before the refresh
//! and the beats are `heartbeat` apart). For up to one heartbeat the holder
//! runs on with `lost()` unfired while a peer holds the lock. Its
//! `refresh()` before a write still says `Ok(false)`.
//!
//! Classified as a known issue (`Class::LateLoss`); this test pins it down.

mod support;

use heldlock_sim::{Class, Faults, Invariant, SimConfig};

#[test]
fn failing_heartbeats_let_a_peer_in_before_lost_fires() {
    let config = SimConfig {
        contenders: 4,
        faults: Faults {
            io: true,
            ..Faults::NONE
        },
        fault_rate: 60_000,
        io_heartbeat_only: true,
        ..SimConfig::default()
    };
    let found = support::first_finding(
        &config,
        600,
        Class::LateLoss,
        Some(Invariant::MutualExclusion),
    );
    let Some(report) = found else {
        panic!(
            "no late loss in 600 seeds; has the heartbeat policy changed? update docs/testing.md"
        );
    };
    support::show(
        &config,
        &report,
        Class::LateLoss,
        Some(Invariant::MutualExclusion),
    );
    assert!(report.real().next().is_none(), "{:?}", report.violations);
}
