//! The async-std adapter of heldlock: a `Clock` on async-std's timers, the
//! heartbeat as an async-std task, and the `FileLock` API. (Arrives with the
//! held-lock work.)
//!
//! It re-exports the runtime-agnostic parts of `heldlock-core`:
//!
//! ```
//! # async_std::task::block_on(async {
//! let serializer = heldlock_async_std::Serializer::new();
//! assert_eq!(serializer.serialize(1, async { "one" }).await, "one");
//! # });
//! ```
#![warn(missing_docs)]

pub use heldlock_core::{KeyGuard, Serializer, Turn, default_serializer, serialize};
