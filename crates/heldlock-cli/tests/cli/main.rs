//! The `heldlock` binary driven as a user would: real processes, real lock
//! files, real signals. Every wait is a poll for a file or an exit status
//! with a deadline, never a fixed sleep.
#![allow(clippy::unwrap_used)]

// One binary for every subcommand (a binary each would cost a link each in
// CI); the helpers every test binary shares live beside them.
#[path = "../common/mod.rs"]
mod common;

mod breaking;
mod errors;
mod fixtures;
mod inherited;
mod run;
mod status;
