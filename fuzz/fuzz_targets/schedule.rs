//! The simulator driven by fuzzer bytes: the first 8 bytes choose the
//! scenario (the seed), every following byte is one scheduling or fault
//! decision of the run's tape. Any *real* violation of the invariants (not
//! the documented known race, not an excused long pause) is a crash.
#![no_main]

use heldlock_sim::{RunOptions, SimConfig, Tape};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (seed, decisions) = data.split_at(data.len().min(8));
    let mut seed_bytes = [0u8; 8];
    seed_bytes[..seed.len()].copy_from_slice(seed);
    let seed = u64::from_le_bytes(seed_bytes);
    let tape = Tape(decisions.iter().map(|&b| u64::from(b)).collect());
    let options = RunOptions {
        replay: Some(tape),
        ..RunOptions::default()
    };
    let report = heldlock_sim::run(&SimConfig::default(), seed, &options);
    if let Some(violation) = report.real().next() {
        panic!("seed {seed}: {violation:?}");
    }
});
