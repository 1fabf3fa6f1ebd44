//! The tokio adapter of heldlock: a `Clock` on tokio's time, the heartbeat as
//! a tokio task, and the `FileLock` API. (Arrives with the held-lock work.)
//!
//! It re-exports the runtime-agnostic parts of `heldlock-core`:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let serializer = heldlock_tokio::Serializer::new();
//! assert_eq!(serializer.serialize(1, async { "one" }).await, "one");
//! # }
//! ```
#![warn(missing_docs)]

pub use heldlock_core::{KeyGuard, Serializer, Turn, default_serializer, serialize};
