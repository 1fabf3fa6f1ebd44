//! Cross-crate tests and benchmarks of heldlock: the conformance suite on
//! every backend and runtime, multi-process tests, CLI tests and the criterion
//! benchmarks behind `cargo xtask bench`.
#![warn(missing_docs)]

pub mod floor;
