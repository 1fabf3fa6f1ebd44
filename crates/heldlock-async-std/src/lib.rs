//! The async-std adapter of heldlock: [`AsyncStdRuntime`] gives the core
//! async-std's clock and runs each held lock's heartbeat as an async-std
//! task, and [`FileLock`] is the lock-file lock on it.
//!
//! ```
//! use std::time::Duration;
//! use heldlock_async_std::{FileLock, LockOptions};
//!
//! # async_std::task::block_on(async {
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("db.lock");
//! let lock = FileLock::new(path, LockOptions::new(Duration::from_secs(30)))?;
//! let value = lock
//!     .with_lock(|state| async move {
//!         assert!(state.acquired());
//!         42
//!     })
//!     .await;
//! assert_eq!(value, 42);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
#![warn(missing_docs)]

mod runtime;

pub use heldlock_core::{
    Error, HeldLock, Holder, Inspection, KeyGuard, Lock, LockOptions, LockRecord, LockState,
    Released, Serializer, Turn, Warning, default_serializer, serialize,
};
pub use runtime::AsyncStdRuntime;

/// A held lock on one lock file, on async-std; see [`heldlock_fs::FileLock`].
pub type FileLock = heldlock_fs::FileLock<AsyncStdRuntime>;
