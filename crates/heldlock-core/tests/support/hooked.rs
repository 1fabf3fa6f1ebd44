//! A backend that forwards every step to another one except where a test
//! hooks in: tests that need one or two steps changed (counted, numbered,
//! notified) state only those, and a step added to `LockBackend` is
//! forwarded here once rather than in every test.
//!
//! A type and not a macro, since `#[async_trait]` rewrites an impl before
//! any macro inside it expands.

use std::fmt;
use std::time::SystemTime;

use async_trait::async_trait;
use heldlock_core::{
    BackendError, Broke, ChangeListener, Created, Inspection, LockBackend, LockRecord,
    MemoryBackend, Observed, OwnerId, Refreshed, Released,
};

/// What a test changes in the steps of a [`Hooked`] backend. Each method
/// gets the wrapped backend, so that a hook can act before, after or
/// instead of the step; the defaults forward, so that the wrapper hides
/// nothing the inner backend offers (the provided methods included).
#[async_trait]
pub trait Hooks: fmt::Debug + Send + Sync + 'static {
    fn resource(&self, inner: &dyn LockBackend) -> String {
        inner.resource()
    }
    async fn try_create(
        &self,
        inner: &dyn LockBackend,
        record: &LockRecord,
    ) -> Result<Created, BackendError> {
        inner.try_create(record).await
    }
    async fn inspect(&self, inner: &dyn LockBackend) -> Result<Inspection, BackendError> {
        inner.inspect().await
    }
    async fn refresh(
        &self,
        inner: &dyn LockBackend,
        owner: &OwnerId,
        now: SystemTime,
    ) -> Result<Refreshed, BackendError> {
        inner.refresh(owner, now).await
    }
    async fn break_if_unchanged(
        &self,
        inner: &dyn LockBackend,
        observed: &Observed,
    ) -> Result<Broke, BackendError> {
        inner.break_if_unchanged(observed).await
    }
    async fn release(
        &self,
        inner: &dyn LockBackend,
        owner: &OwnerId,
    ) -> Result<Released, BackendError> {
        inner.release(owner).await
    }
    fn release_blocking(
        &self,
        inner: &dyn LockBackend,
        owner: &OwnerId,
    ) -> Option<Result<Released, BackendError>> {
        inner.release_blocking(owner)
    }
    fn listen(&self, inner: &dyn LockBackend) -> Option<ChangeListener> {
        inner.listen()
    }
    fn wait_behind_older(&self, inner: &dyn LockBackend) -> Option<ChangeListener> {
        inner.wait_behind_older()
    }
    fn fencing_token(&self, inner: &dyn LockBackend, owner: &OwnerId) -> Option<u64> {
        inner.fencing_token(owner)
    }
}

/// `inner` with the steps `hooks` overrides changed. Both fields are
/// public, so that a test reads what its hooks recorded and makes another
/// handle on the same inner lock.
#[derive(Debug)]
pub struct Hooked<H, B = MemoryBackend> {
    pub inner: B,
    pub hooks: H,
}

impl<H: Hooks, B: LockBackend> Hooked<H, B> {
    pub fn new(inner: B, hooks: H) -> Self {
        Hooked { inner, hooks }
    }
}

#[async_trait]
impl<H: Hooks, B: LockBackend> LockBackend for Hooked<H, B> {
    fn resource(&self) -> String {
        self.hooks.resource(&self.inner)
    }
    async fn try_create(&self, record: &LockRecord) -> Result<Created, BackendError> {
        self.hooks.try_create(&self.inner, record).await
    }
    async fn inspect(&self) -> Result<Inspection, BackendError> {
        self.hooks.inspect(&self.inner).await
    }
    async fn refresh(&self, owner: &OwnerId, now: SystemTime) -> Result<Refreshed, BackendError> {
        self.hooks.refresh(&self.inner, owner, now).await
    }
    async fn break_if_unchanged(&self, observed: &Observed) -> Result<Broke, BackendError> {
        self.hooks.break_if_unchanged(&self.inner, observed).await
    }
    async fn release(&self, owner: &OwnerId) -> Result<Released, BackendError> {
        self.hooks.release(&self.inner, owner).await
    }
    fn release_blocking(&self, owner: &OwnerId) -> Option<Result<Released, BackendError>> {
        self.hooks.release_blocking(&self.inner, owner)
    }
    fn listen(&self) -> Option<ChangeListener> {
        self.hooks.listen(&self.inner)
    }
    fn wait_behind_older(&self) -> Option<ChangeListener> {
        self.hooks.wait_behind_older(&self.inner)
    }
    fn fencing_token(&self, owner: &OwnerId) -> Option<u64> {
        self.hooks.fencing_token(&self.inner, owner)
    }
}
