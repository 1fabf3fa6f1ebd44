//! The smol adapter of heldlock: [`SmolRuntime`] gives the core smol's timers
//! and runs each held lock's heartbeat on smol's global executor, and
//! [`FileLock`] is the lock-file lock on it.
//!
//! smol is the successor that async-std's authors name (async-std is
//! discontinued upstream); see `docs/runtimes.md`.
//!
//! ```
//! use std::time::Duration;
//! use heldlock_smol::{FileLock, LockOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("db.lock");
//! smol::block_on(async {
//!     let lock = FileLock::new(path, LockOptions::new(Duration::from_secs(30)))?;
//!     let held = lock.acquire().await?;
//!     if held.refresh().await? {
//!         // still ours: safe to write
//!     }
//!     held.release().await?;
//!     Ok(())
//! })
//! # }
//! ```
#![warn(missing_docs)]

mod runtime;

pub use heldlock_core::{
    Error, HeldLock, Holder, Inspection, KeyGuard, Lock, LockOptions, LockRecord, LockState,
    Released, Serializer, Turn, Warning, default_serializer, serialize,
};
pub use runtime::SmolRuntime;

/// A held lock on one lock file, on smol; see [`heldlock_fs::FileLock`].
pub type FileLock = heldlock_fs::FileLock<SmolRuntime>;
