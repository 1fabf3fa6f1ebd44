//! The simulator driven by fuzzer bytes. Any *real* violation of the
//! invariants (not the documented known race, not an excused long pause) is
//! a crash.
//!
//! # From bytes to a run
//!
//! The simulator replays a *tape* of decisions (`heldlock_sim::Tape`): one
//! number per decision, read in order, where `0` is always the boring
//! choice: keep running the same task, no fault, no time jitter. A fault's
//! coin is "heads" for any other number, so a tape of raw bytes, where 255
//! of 256 values are not `0`, turned some fault on at nearly every step.
//! The mapping below keeps faults rare instead, and most runs free of them:
//!
//! | input bytes | meaning |
//! | --- | --- |
//! | 0..8 | the seed (little-endian; missing bytes are 0): the scenario (start state, clocks, contenders' plans, which of the allowed fault kinds are on) |
//! | 8 | which fault kinds are allowed: `0xF0..=0xF5` one kind (crash, pause, long pause, I/O, clock, intruder, in that order), `0xF6..=0xFF` every kind, anything else (or no byte) none |
//! | 9.. | one decision each: `0x00..=0xEF` is `0` (the boring choice); `0xF0..=0xFF` is one of 16 large, distinct non-zero numbers |
//!
//! With no fault kind allowed (15 inputs in 16), the decisions only pick
//! which task runs next and when time jumps: a fault-free schedule. With
//! faults allowed, a decision that is a fault's coin turns the fault on only
//! for a byte in `0xF0..=0xFF` (1 in 16). A non-zero decision is large so
//! that, reduced modulo the number of choices (`below(n)`), it still picks
//! among all of them: which task, which contender, which errno, how long.
//!
//! Seeds: `fuzz/corpus/schedule/`, made by `fuzz/corpus/make-seeds.sh`.
#![no_main]

use heldlock_sim::{Faults, RunOptions, SimConfig, Tape};
use libfuzzer_sys::fuzz_target;

/// The first byte of the range that means "something happens".
const RARE: u8 = 0xF0;

/// The fault kinds that byte 8 allows.
fn faults(byte: Option<u8>) -> Faults {
    let one = |set: fn(&mut Faults)| {
        let mut faults = Faults::NONE;
        set(&mut faults);
        faults
    };
    match byte {
        Some(0xF0) => one(|f| f.crash = true),
        Some(0xF1) => one(|f| f.pause = true),
        Some(0xF2) => one(|f| f.long_pause = true),
        Some(0xF3) => one(|f| f.io = true),
        Some(0xF4) => one(|f| f.clock = true),
        Some(0xF5) => one(|f| f.intruder = true),
        Some(0xF6..=0xFF) => Faults::ALL,
        _ => Faults::NONE,
    }
}

/// One decision of the tape.
fn decision(byte: u8) -> u64 {
    match byte.checked_sub(RARE) {
        // 1..=16 times an odd 64-bit constant: distinct, non-zero, and
        // spread over every residue of a small modulus.
        Some(k) => (u64::from(k) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        None => 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let (seed, rest) = data.split_at(data.len().min(8));
    let mut seed_bytes = [0u8; 8];
    seed_bytes[..seed.len()].copy_from_slice(seed);
    let seed = u64::from_le_bytes(seed_bytes);
    let (allowed, decisions) = match rest.split_first() {
        Some((&byte, decisions)) => (faults(Some(byte)), decisions),
        None => (faults(None), rest),
    };
    let config = SimConfig {
        faults: allowed,
        ..SimConfig::default()
    };
    let options = RunOptions {
        replay: Some(Tape(decisions.iter().copied().map(decision).collect())),
        ..RunOptions::default()
    };
    let report = heldlock_sim::run(&config, seed, &options);
    if let Some(violation) = report.real().next() {
        panic!(
            "seed {seed}, faults {}: {violation:?}",
            config.faults.names()
        );
    }
});
