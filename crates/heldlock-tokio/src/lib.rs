//! The tokio adapter of heldlock: [`TokioRuntime`] gives the core tokio's
//! clock and runs each held lock's heartbeat as a tokio task.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let serializer = heldlock_tokio::Serializer::new();
//! assert_eq!(serializer.serialize(1, async { "one" }).await, "one");
//! # }
//! ```
#![warn(missing_docs)]

mod runtime;

pub use heldlock_core::{
    Error, HeldLock, KeyGuard, Lock, LockOptions, LockState, Serializer, Turn, default_serializer,
    serialize,
};
pub use runtime::TokioRuntime;
