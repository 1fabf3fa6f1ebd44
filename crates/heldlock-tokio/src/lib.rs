//! The tokio adapter of heldlock: [`TokioRuntime`] gives the core tokio's
//! clock and runs each held lock's heartbeat as a tokio task, and
//! [`FileLock`] is the lock-file lock on it.
//!
//! ```
//! use std::time::Duration;
//! use heldlock_tokio::{FileLock, LockOptions};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("db.lock");
//! let lock = FileLock::new(path, LockOptions::new(Duration::from_secs(30)))?;
//! let held = lock.acquire().await?;
//! if held.refresh().await? {
//!     // still ours: safe to write
//! }
//! held.release().await?;
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod runtime;

pub use heldlock_core::{
    Error, HeldLock, Holder, Inspection, KeyGuard, Lock, LockOptions, LockRecord, LockState,
    Released, Serializer, Turn, Warning, default_serializer, serialize,
};
pub use runtime::TokioRuntime;

/// A held lock on one lock file, on tokio; see [`heldlock_fs::FileLock`].
pub type FileLock = heldlock_fs::FileLock<TokioRuntime>;
