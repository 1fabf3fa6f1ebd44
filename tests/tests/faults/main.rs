//! File-system faults on every protocol step, through the full lock
//! (`heldlock_core::Lock` over `FsBackend` over a fault-injecting `Vfs`),
//! and real ones where this machine allows (a full tmpfs, a read-only
//! mount; `EACCES` on a directory for real is in `hostile/other_users.rs`,
//! run as the user `nobody`).
//!
//! For each scenario the fault-free run is recorded first; then every call
//! it made is failed in turn, once, with each of `EIO`, `ENOSPC`, `EACCES`
//! and `EROFS`. Whatever the call, the strict `acquire()` either absorbs the
//! fault (and still acquires) or returns `Error::Backend(BackendError::Io)`
//! naming the lock path, the step and the action, with the injected errno;
//! best effort (`with_lock`) runs the task exactly once, unlocked with a
//! warning when the strict call failed; nothing of a peer is changed, no
//! half-made lock of ours and no trash is left (except where listed).
//!
//! One test binary (each costs CI link time), one module per kind of
//! fault: [`matrix`] (acquiring), [`holding`], [`leftovers`], [`real`];
//! [`case`] is what they share.
#![allow(clippy::unwrap_used)]

#[path = "../support/mod.rs"]
mod support;
#[path = "../vfs_faults/mod.rs"]
mod vfs_faults;

mod case;

mod holding;
mod leftovers;
mod matrix;
mod real;
