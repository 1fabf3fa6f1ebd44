//! The runtime-agnostic core of heldlock.
//!
//! This crate knows no async runtime and no file system. It owns the policy of
//! heldlock: keyed in-process serialization ([`Serializer`]), and (for held
//! locks) when to try, when a lock is stale, how long to back off and when
//! ownership is lost. Runtime adapters (`heldlock-tokio`, `heldlock-async-std`)
//! and backends (`heldlock-fs`) build on it; most programs use the `heldlock`
//! facade instead of this crate.
//!
//! # Keyed serialization
//!
//! ```
//! use heldlock_core::Serializer;
//!
//! # futures::executor::block_on(async {
//! let serializer = Serializer::new();
//! // Same key: one at a time, in call order. Other keys: concurrently.
//! let total = serializer.serialize("counter", async { 40 + 2 }).await;
//! assert_eq!(total, 42);
//! # });
//! ```
#![warn(missing_docs)]

mod clock;
mod error;
mod lock;
mod rounded;
mod serializer;

pub use clock::{Clock, ManualClock, Runtime, Sleep, Spawn};
pub use error::Error;
pub use lock::backend::{
    BackendError, Broke, ChangeListener, Created, LockBackend, Refreshed, Released, Step,
};
pub use lock::handle::Lock;
pub use lock::lease::{HeldLock, LockState};
pub use lock::memory::MemoryBackend;
pub use lock::options::{
    DEFAULT_MAX_DECLARED_STALE, DEFAULT_MAX_WAIT, DEFAULT_POLL, LockOptions, MAX_DURATION,
    MIN_DEFAULT_HEARTBEAT, OptionsError, Timing, Warning, WarningHook,
};
pub use lock::probe::HostProbe;
pub use lock::record::{Holder, Identity, Inspection, LockRecord, Observed, OwnerId};
pub use lock::{acquire, heartbeat, stale};
pub use rounded::Rounded;
pub use serializer::{KeyGuard, Serializer, Turn, default_serializer, serialize};
