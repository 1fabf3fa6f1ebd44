//! A finding of the simulator, now fixed: when a holder's heartbeat
//! refreshes kept failing (I/O errors) while its peers' I/O worked, the
//! heartbeat used to declare the loss only at a beat `stale` after the last
//! *confirmed* refresh, but peers may break the lock once its *stamp* is
//! `stale` old, which comes first. For up to one heartbeat the holder ran on
//! with `lost()` unfired while a peer held the lock.
//!
//! The heartbeat policy now counts from the stamp and declares the loss as
//! soon as the next beat would come too late (`heldlock_core::heartbeat`).
//! This test runs the schedules that found it and asserts it stays gone.

mod support;

use heldlock_sim::{Class, Faults, Invariant, SimConfig};

#[test]
fn failing_heartbeats_signal_lost_before_a_peer_gets_in() {
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
    if let Some(report) = found {
        support::show(
            &config,
            &report,
            Class::LateLoss,
            Some(Invariant::MutualExclusion),
        );
        panic!("the late loss is back: {:?}", report.violations);
    }
}
