//! How the suite gets lock resources and handles on them.

use std::sync::Arc;

use heldlock_core::{BackendError, LockBackend};

/// Makes a new, free lock resource for each check.
///
/// Every check calls [`fresh`](Self::fresh) once and works only on the
/// resource it got, so checks never see each other's locks and can run in
/// parallel. For a file backend a resource is a new lock path (in a temporary
/// directory); for a store it is a new key.
///
/// Closures `Fn() -> Result<Box<dyn Resource>, BackendError>` implement this
/// trait.
pub trait BackendFactory: Send + Sync {
    /// A lock resource that no lock holds and that no other call returned.
    ///
    /// # Errors
    ///
    /// When the resource cannot be set up; the check then fails with
    /// [`Failure::Backend`](crate::Failure::Backend).
    fn fresh(&self) -> Result<Box<dyn Resource>, BackendError>;
}

impl<F> BackendFactory for F
where
    F: Fn() -> Result<Box<dyn Resource>, BackendError> + Send + Sync,
{
    fn fresh(&self) -> Result<Box<dyn Resource>, BackendError> {
        self()
    }
}

/// One lock resource, from which the checks open handles.
///
/// Each [`open`](Self::open) returns a new handle that acts as a separate
/// process contending for the same lock: for a file backend, a new backend
/// value on the same path (with none of the other handles' open descriptors);
/// for [`MemoryBackend`](heldlock_core::MemoryBackend), a clone (see
/// [`SharedClones`]). A check opens one handle per simulated process and
/// performs every step of that process through it.
///
/// Closures `Fn() -> Result<Arc<dyn LockBackend>, BackendError>` implement this
/// trait.
pub trait Resource: Send + Sync {
    /// A new handle on this resource, acting as another process.
    ///
    /// # Errors
    ///
    /// When the handle cannot be made; the check then fails with
    /// [`Failure::Backend`](crate::Failure::Backend).
    fn open(&self) -> Result<Arc<dyn LockBackend>, BackendError>;
}

impl<F> Resource for F
where
    F: Fn() -> Result<Arc<dyn LockBackend>, BackendError> + Send + Sync,
{
    fn open(&self) -> Result<Arc<dyn LockBackend>, BackendError> {
        self()
    }
}

/// A [`Resource`] whose handles are clones of one backend value, for backends
/// whose clones share one lock, such as
/// [`MemoryBackend`](heldlock_core::MemoryBackend).
///
/// Do not use it for a backend whose clones share per-holder state (an open
/// descriptor, a session): its handles would not act as separate processes,
/// and checks about strangers and replacements would test less than they
/// claim.
#[derive(Clone, Debug)]
pub struct SharedClones<B>(pub B);

impl<B: LockBackend + Clone> Resource for SharedClones<B> {
    fn open(&self) -> Result<Arc<dyn LockBackend>, BackendError> {
        Ok(Arc::new(self.0.clone()))
    }
}
