//! The lock-file protocol on the real file system, one step at a time.
#![allow(clippy::unwrap_used)]

// One binary for the whole protocol suite (a binary per step would cost a
// link each in CI); the shared helpers live beside the other binaries'.
#[path = "../support/mod.rs"]
mod support;

mod breaking;
mod create;
mod inspect;
mod not_a_file;
mod refresh;
mod release;
