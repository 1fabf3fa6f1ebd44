//! Keyed async serialization and held cross-process locks.
//!
//! Programs that keep state on disk must serialize their read-modify-write
//! cycles: inside one process across async tasks, and across processes that
//! may crash or hang. heldlock gives them:
//!
//! * [`Serializer`]: per-key FIFO async serialization; failures, panics and
//!   cancellations never block the tasks behind; idle keys cost nothing;
//! * `FileLock`, one per runtime (see [below](#runtimes-and-features)): a
//!   lock file held by a live owner (heartbeat), broken safely when its owner
//!   died, released only if still ours, with [`refresh`](HeldLock::refresh)
//!   and a [`lost`](HeldLock::lost) signal so a holder learns it lost the
//!   lock before it writes.
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
//! # A held file lock
//!
//! ```
//! # #[cfg(feature = "tokio")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), heldlock::Error> {
//! use std::time::Duration;
//! use heldlock::{FileLock, LockOptions}; // tokio's FileLock (feature `tokio`)
//!
//! # let dir = tempfile::tempdir().expect("a temporary directory");
//! # let path = dir.path().join("db.lock");
//! let options = LockOptions::new(Duration::from_secs(30)) // stale after 30 s
//!     .max_wait(Duration::from_secs(5));
//! let lock = FileLock::new(path, options)?;
//! let held = lock.acquire().await?; // Err(Error::Timeout { .. }) after max_wait
//! if held.refresh().await? {
//!     // still ours: write the state
//! }
//! held.release().await?; // also released on drop
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "tokio"))] fn main() {}
//! ```
//!
//! Best effort, as the reference implementation does it: the task runs
//! unlocked (with `state.acquired() == false`) when the lock cannot be had.
//!
//! ```
//! # #[cfg(feature = "tokio")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), heldlock::Error> {
//! # use std::time::Duration;
//! # let dir = tempfile::tempdir().expect("a temporary directory");
//! let lock = heldlock::FileLock::new(dir.path().join("db.lock"), heldlock::LockOptions::new(Duration::from_secs(30)))?;
//! let written = lock
//!     .with_lock(|state| async move {
//!         if state.acquired() { /* read, modify, write */ }
//!         1
//!     })
//!     .await;
//! # assert_eq!(written, 1);
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "tokio"))] fn main() {}
//! ```
//!
//! # Runtimes and features
//!
//! Each runtime's lock has a path of its own, and no feature changes what a
//! path means: turning on a feature only adds paths. A program written
//! against `heldlock::smol::FileLock` keeps running on smol when some other
//! crate in the dependency graph turns `tokio` on too (Cargo unifies features
//! across the graph).
//!
//! | feature | default | path | the lock runs on |
//! | --- | --- | --- | --- |
//! | `tokio` | yes | `heldlock::tokio::FileLock`, and its short name `heldlock::FileLock` | tokio (needs a tokio runtime context) |
//! | `smol` | no | `heldlock::smol::FileLock` | smol |
//! | `async-std` | no | `heldlock::async_std::FileLock` | async-std (discontinued upstream; prefer smol) |
//! | `etcd` | no | `heldlock::etcd::EtcdLock`: a lock on an etcd key, with a [fencing token](HeldLock::fencing_token) per grant (building it needs `protoc`) | tokio |
//! | (always) | | [`blocking::FileLock`] | no runtime: the calling thread |
//!
//! `heldlock::FileLock` exists only with the `tokio` feature and is always
//! tokio's; on smol or async-std name the runtime's module, even when
//! `tokio` is off.
//!
//! ```
//! # #[cfg(feature = "smol")]
//! # fn main() -> Result<(), heldlock::Error> {
//! use std::time::Duration;
//! use heldlock::LockOptions;
//! use heldlock::smol::FileLock; // smol's, whichever other features are on
//!
//! # let dir = tempfile::tempdir().expect("a temporary directory");
//! smol::block_on(async {
//!     let lock = FileLock::new(dir.path().join("db.lock"), LockOptions::new(Duration::from_secs(30)))?;
//!     let held = lock.acquire().await?;
//!     held.release().await?;
//!     Ok(())
//! })
//! # }
//! # #[cfg(not(feature = "smol"))] fn main() {}
//! ```
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use heldlock_core::{
    BackendError, DEFAULT_MAX_DECLARED_STALE, Error, HeldLock, Holder, Inspection, KeyGuard, Lock,
    LockBackend, LockOptions, LockRecord, LockState, MAX_DURATION, MemoryBackend, OptionsError,
    OwnerId, Released, Rounded, Serializer, Step, Turn, Warning, default_serializer, serialize,
};
pub use heldlock_fs::FsError;

/// The backend contract and its building blocks, for writing a backend.
pub mod backend {
    pub use heldlock_core::{
        BackendError, Broke, Clock, Created, Holder, Identity, Inspection, LockBackend, LockRecord,
        MemoryBackend, Observed, OwnerId, Refreshed, Released, Runtime, Spawn, Step,
    };
    pub use heldlock_core::{ChangeListener, HostProbe};
    pub use heldlock_fs::{FsBackend, LocalHost};
}

/// heldlock on tokio.
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod tokio {
    pub use heldlock_tokio::{FileLock, TokioRuntime};
}

/// heldlock on smol.
#[cfg(feature = "smol")]
#[cfg_attr(docsrs, doc(cfg(feature = "smol")))]
pub mod smol {
    pub use heldlock_smol::{FileLock, SmolRuntime};
}

/// heldlock on async-std.
#[cfg(feature = "async-std")]
#[cfg_attr(docsrs, doc(cfg(feature = "async-std")))]
pub mod async_std {
    pub use heldlock_async_std::{AsyncStdRuntime, FileLock};
}

/// heldlock on etcd: a lock on one etcd key, on tokio.
///
/// An etcd lock is held under an etcd lease whose TTL is the lock's
/// `stale`; a holder that dies loses it when etcd ends the lease, never by a
/// contender's judgement. Every grant has a fencing token, the key's create
/// revision ([`HeldLock::fencing_token`](crate::HeldLock::fencing_token)).
/// See the `heldlock-etcd` crate for how each step maps onto etcd, and
/// `examples/etcd.rs` (`cargo run -p heldlock --features etcd --example
/// etcd -- http://127.0.0.1:2379`).
///
/// ```no_run
/// use std::time::Duration;
/// use heldlock::LockOptions;
/// use heldlock::etcd::EtcdLock;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), heldlock::Error> {
/// let lock = EtcdLock::connect(&["http://127.0.0.1:2379"], "locks/db", LockOptions::new(Duration::from_secs(10))).await?;
/// let held = lock.acquire().await?;
/// let token = held.fencing_token(); // Some(create revision)
/// # let _ = token;
/// held.release().await?;
/// # Ok(())
/// # }
/// ```
#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub mod etcd {
    pub use heldlock_etcd::{
        DEFAULT_REQUEST_TIMEOUT, DEFAULT_TTL, EtcdBackend, EtcdError, Holding, etcd_client,
    };

    /// A held lock on one etcd key, on tokio; see [`heldlock_etcd::EtcdLock`].
    pub type EtcdLock = heldlock_etcd::EtcdLock<heldlock_tokio::TokioRuntime>;
}

/// Short name of [`tokio::FileLock`]: with the `tokio` feature only, and
/// always tokio's, whichever other runtime features are on. On smol or
/// async-std use `heldlock::smol::FileLock` or `heldlock::async_std::FileLock`.
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub use heldlock_tokio::FileLock;

pub mod blocking;

/// The README's examples, compiled and run as doctests (they are tokio's).
#[cfg(all(doctest, feature = "tokio"))]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
