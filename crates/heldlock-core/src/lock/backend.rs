//! The five atomic operations a lock backend provides.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;

use super::record::{Inspection, LockRecord, Observed, OwnerId};

/// The mechanics of one lock resource (one lock file, one key of a store):
/// five atomic steps that never sleep and never retry. All policy (when to
/// try, what is stale, how long to wait) lives in the core.
///
/// # Contract
///
/// | method | must |
/// | --- | --- |
/// | [`try_create`](Self::try_create) | create the lock with `record` only if no lock exists, atomically |
/// | [`inspect`](Self::inspect) | report the current lock's record, identity and last refresh stamp |
/// | [`refresh`](Self::refresh) | re-stamp the lock only while it is still the one `owner` created |
/// | [`break_if_unchanged`](Self::break_if_unchanged) | remove the lock only if it is still exactly the `observed` one, never a replacement |
/// | [`release`](Self::release) | remove the lock only if it is still the one `owner` created |
///
/// "Still the one `owner` created" means the very instance `try_create`
/// made, with a record still naming `owner`: a lock recreated by someone else
/// with a copied record is not ours. The `heldlock-conformance` crate checks
/// all of this; run its `run_all` on any new backend.
///
/// # Errors
///
/// Every method returns [`BackendError`] when the backend could not carry the
/// step out (I/O failure, permission, a resource that is not a lock). Contention is
/// never an error: it is a value (`Exists`, `Changed`, `NotOurs`, `Lost`).
///
/// # Cancel safety
///
/// A step that is dropped half-way must leave the resource in a state the
/// protocol tolerates: either not done, or done as if completed. Backends that
/// run a step as one synchronous sequence (the file system backend does) meet
/// this trivially.
#[async_trait]
pub trait LockBackend: Send + Sync + fmt::Debug + 'static {
    /// A short human name of the resource, for messages (a path, a URL).
    fn resource(&self) -> String;

    /// Creates the lock holding `record`, if no lock exists.
    async fn try_create(&self, record: &LockRecord) -> Result<Created, BackendError>;

    /// Looks at the current lock.
    async fn inspect(&self) -> Result<Inspection, BackendError>;

    /// Re-stamps the lock with `now` if it is still the one `owner` created.
    async fn refresh(&self, owner: &OwnerId, now: SystemTime) -> Result<Refreshed, BackendError>;

    /// Removes the lock if it is still exactly `observed` (same identity, same
    /// refresh stamp); otherwise leaves whatever is there untouched.
    async fn break_if_unchanged(&self, observed: &Observed) -> Result<Broke, BackendError>;

    /// Removes the lock if it is still the one `owner` created.
    async fn release(&self, owner: &OwnerId) -> Result<Released, BackendError>;

    /// [`release`](Self::release) done synchronously, for a guard's `Drop`.
    ///
    /// Return `None` (the default) when the backend cannot release without
    /// awaiting; the lock is then left to go stale, since its heartbeat stops.
    fn release_blocking(&self, owner: &OwnerId) -> Option<Result<Released, BackendError>> {
        let _ = owner;
        None
    }

    /// A notification that the lock may have become free: it completes once
    /// the lock is released, broken or removed *after* this call (spurious
    /// completions are allowed). The core subscribes before each look at a
    /// busy lock and wakes its waiter with it instead of sleeping out its
    /// poll.
    ///
    /// A listener may stand for state of its waiter until it is dropped,
    /// even after it completed (`heldlock-fs` keeps the waiter's process in
    /// a queue of the host's waiting processes): drop it as soon as it is no
    /// longer needed, and subscribe anew before dropping the old one to keep
    /// that state.
    ///
    /// Return `None` (the default) when the backend cannot notify; waiters
    /// then poll with an exponential backoff.
    fn listen(&self) -> Option<ChangeListener> {
        None
    }

    /// Bounded waiting ([`LockOptions::bounded_wait`](crate::LockOptions::bounded_wait)):
    /// asked once per acquisition, before its first try. Return a listener
    /// when an older waiter has asked to go first; it completes when this
    /// acquirer may try (its own turn among the waiters came, or the older
    /// waiter got the lock). The core waits for it at most `poll`, and never
    /// past its deadline, then tries as usual; it keeps the listener until
    /// its next [`listen`](Self::listen) replaces it, since the listener may
    /// hold a place in a queue of waiters, as `listen`'s may.
    ///
    /// A courtesy, never a rule of exclusion: the acquirer tries anyway once
    /// the wait ends, and the backend's steps decide who holds the lock.
    /// Return `None` (the default) to have every acquirer try at once.
    fn wait_behind_older(&self) -> Option<ChangeListener> {
        None
    }

    /// The fencing token of the lock `owner` holds through this handle:
    /// a number that is strictly greater for every later grant of the same
    /// lock, whoever is granted it, so that a resource which remembers the
    /// highest token it has seen can refuse the writes of an older holder
    /// (one paused past its lease). See `docs/safety.md`, "Fencing tokens".
    ///
    /// The core asks once, right after [`try_create`](Self::try_create)
    /// returned [`Created::Created`] for `owner`, and keeps the answer for
    /// the lease's life ([`HeldLock::fencing_token`](crate::HeldLock::fencing_token)).
    /// "Later grant" is the order in which the lock is granted: the token
    /// must be fixed no later than the step that made the lock ours, never
    /// read from a counter that a holder paused between two steps could
    /// still move (or move back).
    ///
    /// Return `None` (the default) unless every grant of the resource gets
    /// such a token; a token that could ever repeat or go back must not be
    /// given, since a resource that trusts it would accept the older
    /// holder's writes. The file backend returns `None`; `heldlock-etcd`
    /// returns the key's create revision.
    ///
    /// Must not panic: it runs after the lock was created and before the
    /// core holds a guard for it, so a panic here leaves the lock to go
    /// stale with nobody holding it.
    fn fencing_token(&self, owner: &OwnerId) -> Option<u64> {
        let _ = owner;
        None
    }
}

/// A future that completes when a lock may have changed; see
/// [`LockBackend::listen`].
pub type ChangeListener = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The result of [`LockBackend::try_create`]. More variants may come:
/// match it with a wildcard arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Created {
    /// The lock is ours.
    Created,
    /// Some lock already exists.
    Exists,
}

/// The result of [`LockBackend::refresh`]. More variants may come: match
/// it with a wildcard arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refreshed {
    /// Still ours, and re-stamped.
    Refreshed,
    /// Gone or replaced: ownership is lost. Nothing was touched.
    Lost,
}

/// The result of [`LockBackend::break_if_unchanged`]. More variants may
/// come: match it with a wildcard arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Broke {
    /// The observed lock was removed.
    Broken,
    /// The lock changed since it was observed (replaced, rewritten or
    /// refreshed) and was left in place.
    Changed,
    /// There was no lock any more.
    Absent,
}

/// The result of [`LockBackend::release`] (and of `HeldLock::release`).
/// More variants may come: match it with a wildcard arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Released {
    /// Our lock was removed.
    Released,
    /// A lock is there but it is not ours; it was left untouched.
    NotOurs,
    /// There was no lock.
    Absent,
}

/// The protocol step a backend error happened in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Creating the lock's container (a file's parent directory).
    Prepare,
    /// [`LockBackend::try_create`].
    Create,
    /// [`LockBackend::inspect`].
    Inspect,
    /// [`LockBackend::refresh`].
    Refresh,
    /// [`LockBackend::break_if_unchanged`].
    Break,
    /// [`LockBackend::release`].
    Release,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Prepare => "prepare",
            Step::Create => "create",
            Step::Inspect => "inspect",
            Step::Refresh => "refresh",
            Step::Break => "break",
            Step::Release => "release",
        })
    }
}

/// A backend could not carry out a step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// An I/O operation failed.
    #[error("{step} of lock {resource}: {action} failed: {source}")]
    Io {
        /// The protocol step.
        step: Step,
        /// The lock resource (a path).
        resource: String,
        /// What was being done, e.g. "rename to trash".
        action: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Something that is not a lock stands where the lock should be.
    #[error(
        "{step} of lock {resource}: {what} stands at the lock path; remove it or choose another path"
    )]
    NotALock {
        /// The protocol step.
        step: Step,
        /// The lock resource.
        resource: String,
        /// What stands there, e.g. "a directory".
        what: String,
    },
    /// A file that is not a lock stands at the lock path: it is not empty,
    /// not a lock record, and not the start of one (a holder that crashed
    /// while writing). Breaking it would destroy somebody's data, so it is
    /// never broken, renamed or rewritten, and waiting would not help.
    #[error(
        "{step} of lock {resource}: the file at the lock path is not a lock file \
         ({size} bytes, beginning \"{excerpt}\"); heldlock never breaks or removes it. \
         Choose another lock path, or remove the file yourself if it is yours"
    )]
    NotALockFile {
        /// The protocol step.
        step: Step,
        /// The lock resource (a path).
        resource: String,
        /// The file's size in bytes.
        size: u64,
        /// A short, escaped excerpt of its first bytes.
        excerpt: String,
    },
    /// Any other failure of a custom backend.
    #[error("{step} of lock {resource} failed: {source}")]
    Other {
        /// The protocol step.
        step: Step,
        /// The lock resource.
        resource: String,
        /// The backend's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl BackendError {
    /// The step the error happened in.
    pub fn step(&self) -> Step {
        match self {
            BackendError::Io { step, .. }
            | BackendError::NotALock { step, .. }
            | BackendError::NotALockFile { step, .. }
            | BackendError::Other { step, .. } => *step,
        }
    }

    /// The OS error kind, for I/O errors.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            BackendError::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}

macro_rules! forward_backend {
    ($($ty:ty),*) => {$(
        #[async_trait]
        impl<B: LockBackend + ?Sized> LockBackend for $ty {
            fn resource(&self) -> String {
                (**self).resource()
            }
            async fn try_create(&self, record: &LockRecord) -> Result<Created, BackendError> {
                (**self).try_create(record).await
            }
            async fn inspect(&self) -> Result<Inspection, BackendError> {
                (**self).inspect().await
            }
            async fn refresh(&self, owner: &OwnerId, now: SystemTime) -> Result<Refreshed, BackendError> {
                (**self).refresh(owner, now).await
            }
            async fn break_if_unchanged(&self, observed: &Observed) -> Result<Broke, BackendError> {
                (**self).break_if_unchanged(observed).await
            }
            async fn release(&self, owner: &OwnerId) -> Result<Released, BackendError> {
                (**self).release(owner).await
            }
            fn release_blocking(&self, owner: &OwnerId) -> Option<Result<Released, BackendError>> {
                (**self).release_blocking(owner)
            }
            fn listen(&self) -> Option<ChangeListener> {
                (**self).listen()
            }
            fn wait_behind_older(&self) -> Option<ChangeListener> {
                (**self).wait_behind_older()
            }
            fn fencing_token(&self, owner: &OwnerId) -> Option<u64> {
                (**self).fencing_token(owner)
            }
        }
    )*};
}

forward_backend!(Box<B>, Arc<B>);
