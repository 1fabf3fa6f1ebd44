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

/// One process's handle on a shared `MemoryBackend`, each step behind its
/// gate (a release on drop goes through at once, as the file backend's).
#[derive(Debug)]
pub struct Gated {
    pub inner: MemoryBackend,
    pub create: Arc<Gate>,
    pub inspect: Arc<Gate>,
    pub refresh: Arc<Gate>,
    pub brk: Arc<Gate>,
    pub release: Arc<Gate>,
}

impl Gated {
    pub fn on(shared: &MemoryBackend) -> Self {
        Gated {
            inner: shared.clone(),
            create: Arc::default(),
            inspect: Arc::default(),
            refresh: Arc::default(),
            brk: Arc::default(),
            release: Arc::default(),
        }
    }

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
impl LockBackend for Gated {
    fn resource(&self) -> String {
        self.inner.resource()
    }
    async fn try_create(&self, record: &LockRecord) -> Result<Created, BackendError> {
        self.create.pass().await;
        self.inner.try_create(record).await
    }
    async fn inspect(&self) -> Result<Inspection, BackendError> {
        self.inspect.pass().await;
        self.inner.inspect().await
    }
    async fn refresh(&self, owner: &OwnerId, now: SystemTime) -> Result<Refreshed, BackendError> {
        self.refresh.pass().await;
        self.inner.refresh(owner, now).await
    }
    async fn break_if_unchanged(&self, observed: &Observed) -> Result<Broke, BackendError> {
        self.brk.pass().await;
        self.inner.break_if_unchanged(observed).await
    }
    async fn release(&self, owner: &OwnerId) -> Result<Released, BackendError> {
        self.release.pass().await;
        self.inner.release(owner).await
    }
    fn release_blocking(&self, owner: &OwnerId) -> Option<Result<Released, BackendError>> {
        self.inner.release_blocking(owner)
    }
}
