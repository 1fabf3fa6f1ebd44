//! Deterministic simulation of the heldlock protocol.
//!
//! The simulator runs the **real** `heldlock-fs` protocol and the **real**
//! core machines (`Lock::acquire`, the heartbeat, `refresh`, `release`) over
//! a simulated POSIX file system ([`SimFs`]) and virtual time
//! ([`SimRuntime`]), under a seeded scheduler that interleaves the
//! contenders at every file-system operation and every sleep, with crashes,
//! pauses, I/O errors, clock skew and outside interference, and checks the
//! protocol's invariants after every step ([`check`]).
//!
//! The smallest run: one seed, three contenders, every kind of fault.
//!
//! ```
//! use heldlock_sim::{RunOptions, SimConfig, run};
//!
//! let report = run(&SimConfig::default(), 42, &RunOptions::default());
//! assert!(report.steps > 0);
//! for violation in report.real() {
//!     panic!("seed 42: {violation}");
//! }
//! ```
//!
//! Same seed, same run: no real time, no thread RNG, no hash-map order.
//! A campaign ([`campaign::Campaign`], `cargo xtask sim`) runs many seeds; a
//! failing seed is replayed with a trace, and shrunk ([`shrink`]) to few
//! faults and context switches. [`SimWorld`] gives the parts (file system,
//! runtimes, scheduler) for scenarios of your own. How to run, read and
//! replay it all, and what it found: `docs/testing.md`.
#![warn(missing_docs)]

pub mod args;
pub mod campaign;
pub mod check;
pub mod config;
mod contender;
mod executor;
pub mod fs;
mod hosts;
mod probe;
pub mod rng;
mod runtime;
mod sandbox;
pub mod serial;
pub mod shrink;
mod sim;
pub mod tape;
mod trace;
mod world;

pub use check::{Class, Invariant, Violation};
pub use config::{Faults, Profile, SimConfig, Skew, Strategy};
pub use fs::{SimFile, SimFs};
pub use runtime::{SimClock, SimRuntime};
pub use sandbox::{SimWorld, Stuck};
pub use sim::{LOCK_PATH, RunOptions, RunReport, run};
pub use tape::Tape;
