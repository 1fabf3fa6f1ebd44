//! Keyed async serialization and held cross-process locks.
//!
//! Programs that keep state on disk must serialize their read-modify-write
//! cycles: inside one process across async tasks, and across processes that may
//! crash or hang. heldlock gives them a keyed FIFO [`Serializer`] and (with the
//! held-lock work) a `FileLock` whose stale locks are broken safely.
//!
//! # Keyed serialization
//!
//! ```
//! # futures::executor::block_on(async {
//! let serializer = heldlock::Serializer::new();
//! let v = serializer.serialize("key", async { 42 }).await; // FIFO per key
//! assert_eq!(v, 42);
//! let v = heldlock::serialize("key", async { 42 }).await;  // process-wide default
//! assert_eq!(v, 42);
//! # });
//! ```
//!
//! # Features
//!
//! | feature | default | what it selects |
//! | --- | --- | --- |
//! | `tokio` | yes | the tokio adapter, `heldlock-tokio` |
//! | `async-std` | no | the async-std adapter, `heldlock-async-std` |
#![warn(missing_docs)]

pub use heldlock_core::{KeyGuard, Serializer, Turn, default_serializer, serialize};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
