//! The protocol's safeguards against a contender acting *between* two of its
//! system calls, driven by a `Vfs` that runs a hook before a chosen call.
#![allow(clippy::unwrap_used)]

// One binary for every race (a binary per step would cost a link each in
// CI); the shared helpers live beside the other binaries'.
#[path = "../support/mod.rs"]
mod support;

mod breaking;
mod create;
mod hooked;
mod inspect;
mod refresh;
mod release;
