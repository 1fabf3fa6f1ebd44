//! The async-std adapter of heldlock: [`AsyncStdRuntime`] gives the core
//! async-std's clock and runs each held lock's heartbeat as an async-std task.
//!
//! ```
//! # async_std::task::block_on(async {
//! let serializer = heldlock_async_std::Serializer::new();
//! assert_eq!(serializer.serialize(1, async { "one" }).await, "one");
//! # });
//! ```
#![warn(missing_docs)]

mod runtime;

pub use heldlock_core::{
    Error, HeldLock, KeyGuard, Lock, LockOptions, LockState, Serializer, Turn, default_serializer,
    serialize,
};
pub use runtime::AsyncStdRuntime;
