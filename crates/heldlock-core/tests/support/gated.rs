//! A `MemoryBackend` handle whose steps wait at gates the test opens and
//! closes: a step behind a closed gate is a future that stays pending (a
//! hung server, or the point at which a `select!` drops its caller).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::SystemTime;

use async_trait::async_trait;
use heldlock_core::{
    BackendError, Broke, Created, Inspection, LockBackend, LockRecord, MemoryBackend, Observed,
    OwnerId, Refreshed, Released,
};

use super::hooked::{Hooked, Hooks};

/// A gate a backend step waits at: open, the step goes through at once;
/// closed, it waits until the gate opens.
#[derive(Debug, Default)]
pub struct Gate {
    closed: AtomicBool,
    arrived: AtomicUsize,
    wakers: Mutex<Vec<Waker>>,
}

impl Gate {
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    pub fn open(&self) {
        self.closed.store(false, Ordering::SeqCst);
        self.wakers.lock().unwrap().drain(..).for_each(Waker::wake);
    }

    /// How many steps came to the gate.
    pub fn arrived(&self) -> usize {
        self.arrived.load(Ordering::SeqCst)
    }

    pub async fn pass(&self) {
        self.arrived.fetch_add(1, Ordering::SeqCst);
        std::future::poll_fn(|cx| {
            if !self.closed.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            self.wakers.lock().unwrap().push(cx.waker().clone());
            if self.closed.load(Ordering::SeqCst) {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
    }
}

/// The gates of one process's handle, one per step a test may hang (a
/// release on drop goes through at once, as the file backend's does).
/// Clones share the gates, so that a test keeps them after the backend has
/// moved into its lock.
#[derive(Clone, Debug, Default)]
pub struct Gates {
    pub create: Arc<Gate>,
    pub inspect: Arc<Gate>,
    pub refresh: Arc<Gate>,
    pub brk: Arc<Gate>,
    pub release: Arc<Gate>,
}

impl Gates {
    /// Every step that came to a gate so far.
    pub fn steps(&self) -> usize {
        [
            &self.create,
            &self.inspect,
            &self.refresh,
            &self.brk,
            &self.release,
        ]
        .iter()
        .map(|gate| gate.arrived())
        .sum()
    }
}

#[async_trait]
impl Hooks for Gates {
    async fn try_create(
        &self,
        inner: &dyn LockBackend,
        record: &LockRecord,
    ) -> Result<Created, BackendError> {
        self.create.pass().await;
        inner.try_create(record).await
    }
    async fn inspect(&self, inner: &dyn LockBackend) -> Result<Inspection, BackendError> {
        self.inspect.pass().await;
        inner.inspect().await
    }
    async fn refresh(
        &self,
        inner: &dyn LockBackend,
        owner: &OwnerId,
        now: SystemTime,
    ) -> Result<Refreshed, BackendError> {
        self.refresh.pass().await;
        inner.refresh(owner, now).await
    }
    async fn break_if_unchanged(
        &self,
        inner: &dyn LockBackend,
        observed: &Observed,
    ) -> Result<Broke, BackendError> {
        self.brk.pass().await;
        inner.break_if_unchanged(observed).await
    }
    async fn release(
        &self,
        inner: &dyn LockBackend,
        owner: &OwnerId,
    ) -> Result<Released, BackendError> {
        self.release.pass().await;
        inner.release(owner).await
    }
}

/// One process's handle on a shared `MemoryBackend`, each step behind its
/// gate.
pub type Gated = Hooked<Gates>;

impl Gated {
    pub fn on(shared: &MemoryBackend) -> Self {
        Hooked::new(shared.clone(), Gates::default())
    }
}
