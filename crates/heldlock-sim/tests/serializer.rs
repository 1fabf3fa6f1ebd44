//! The core `Serializer` under the scheduler, with cancellation at every
//! scheduling point: FIFO per key by call order, no lost wake-up, no
//! retained key.

use heldlock_sim::serial::{run_serializer, run_serializer_campaign};

#[test]
fn serializer_keeps_call_order_wakes_everyone_and_forgets_idle_keys() {
    let report = run_serializer_campaign(0, 20_000);
    println!("{report}");
    if let Some(failure) = report.failures.first() {
        for line in run_serializer(failure.seed, true).trace {
            println!("{line}");
        }
        panic!("seed {}: {}", failure.seed, failure.violation);
    }
    let cancelled = report
        .counters
        .get("serializer.cancelled")
        .copied()
        .unwrap_or(0);
    assert!(
        cancelled > 1_000,
        "cancellation barely exercised: {cancelled}"
    );
}
