//! A lock backend in memory: for tests, and for locks shared only between
//! the tasks of one process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use async_trait::async_trait;

use super::backend::{BackendError, Broke, Created, LockBackend, Refreshed, Released};
use super::record::{Holder, Identity, Inspection, LockRecord, Observed, OwnerId};

/// A [`LockBackend`] whose lock lives in memory.
///
/// Clones share one lock and act as separate processes: each handle owns only
/// the lock instances it created itself, so a record copied by another handle
/// is never taken for ours. The methods
/// [`replace`](Self::replace) and [`set_refreshed_at`](Self::set_refreshed_at)
/// let tests act as a peer that rewrites or ages the lock.
///
/// # Examples
///
/// ```
/// use std::time::SystemTime;
/// use heldlock_core::{Created, LockBackend, LockRecord, MemoryBackend, Released};
///
/// # futures::executor::block_on(async {
/// let backend = MemoryBackend::new("demo");
/// let record = LockRecord::for_this_process(SystemTime::now());
/// assert_eq!(backend.try_create(&record).await?, Created::Created);
/// assert_eq!(backend.try_create(&record).await?, Created::Exists);
/// assert_eq!(backend.release(&record.owner).await?, Released::Released);
/// # Ok::<(), heldlock_core::BackendError>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct MemoryBackend {
    name: Arc<str>,
    slot: Arc<Mutex<Slot>>,
    /// This handle's id: the creator recorded in the instances it creates.
    handle: u64,
}

fn next_handle() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Clone for MemoryBackend {
    /// Another handle on the same lock, as another process would have.
    fn clone(&self) -> Self {
        MemoryBackend {
            name: Arc::clone(&self.name),
            slot: Arc::clone(&self.slot),
            handle: next_handle(),
        }
    }
}

#[derive(Debug, Default)]
struct Slot {
    /// Bumped on every create or replacement: the lock's instance number.
    generation: u64,
    lock: Option<Entry>,
}

#[derive(Debug)]
struct Entry {
    generation: u64,
    /// The handle that created this instance (`None`: put in place by a test).
    creator: Option<u64>,
    holder: Holder,
    refreshed_at: SystemTime,
}

impl Entry {
    fn observe(&self) -> Observed {
        Observed::new(
            self.holder.clone(),
            Identity::new(self.generation.to_le_bytes().to_vec()),
            self.refreshed_at,
        )
    }

    fn owned_by(&self, owner: &OwnerId, handle: u64) -> bool {
        self.creator == Some(handle) && self.holder.record().is_some_and(|r| &r.owner == owner)
    }
}

impl MemoryBackend {
    /// A free lock named `name` (the name only appears in messages).
    pub fn new(name: impl Into<String>) -> Self {
        MemoryBackend {
            name: name.into().into(),
            slot: Arc::new(Mutex::new(Slot::default())),
            handle: next_handle(),
        }
    }

    fn slot(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts a new lock instance in place, whatever was there, as a peer that
    /// broke the lock and took it would.
    pub fn replace(&self, holder: Holder, refreshed_at: SystemTime) {
        let mut slot = self.slot();
        slot.generation += 1;
        slot.lock = Some(Entry {
            generation: slot.generation,
            creator: None,
            holder,
            refreshed_at,
        });
    }

    /// Changes the refresh stamp of the current lock, if any, as a paused or
    /// long-dead holder (an old stamp) or a clock step would.
    pub fn set_refreshed_at(&self, refreshed_at: SystemTime) {
        if let Some(entry) = self.slot().lock.as_mut() {
            entry.refreshed_at = refreshed_at;
        }
    }

    /// Removes the lock, whoever holds it, as an intruder would.
    pub fn remove(&self) {
        self.slot().lock = None;
    }

    fn release_now(&self, owner: &OwnerId) -> Released {
        let mut slot = self.slot();
        match &slot.lock {
            None => Released::Absent,
            Some(entry) if entry.owned_by(owner, self.handle) => {
                slot.lock = None;
                Released::Released
            }
            Some(_) => Released::NotOurs,
        }
    }
}

#[async_trait]
impl LockBackend for MemoryBackend {
    fn resource(&self) -> String {
        format!("memory:{}", self.name)
    }

    async fn try_create(&self, record: &LockRecord) -> Result<Created, BackendError> {
        let mut slot = self.slot();
        if slot.lock.is_some() {
            return Ok(Created::Exists);
        }
        slot.generation += 1;
        slot.lock = Some(Entry {
            generation: slot.generation,
            creator: Some(self.handle),
            holder: Holder::Record(record.clone()),
            refreshed_at: record.acquired_at,
        });
        Ok(Created::Created)
    }

    async fn inspect(&self) -> Result<Inspection, BackendError> {
        Ok(match &self.slot().lock {
            None => Inspection::Absent,
            Some(entry) => Inspection::Present(entry.observe()),
        })
    }

    async fn refresh(&self, owner: &OwnerId, now: SystemTime) -> Result<Refreshed, BackendError> {
        Ok(match self.slot().lock.as_mut() {
            Some(entry) if entry.owned_by(owner, self.handle) => {
                entry.refreshed_at = now;
                Refreshed::Refreshed
            }
            _ => Refreshed::Lost,
        })
    }

    async fn break_if_unchanged(&self, observed: &Observed) -> Result<Broke, BackendError> {
        let mut slot = self.slot();
        Ok(match &slot.lock {
            None => Broke::Absent,
            Some(entry) if entry.observe() == *observed => {
                slot.lock = None;
                Broke::Broken
            }
            Some(_) => Broke::Changed,
        })
    }

    async fn release(&self, owner: &OwnerId) -> Result<Released, BackendError> {
        Ok(self.release_now(owner))
    }

    fn release_blocking(&self, owner: &OwnerId) -> Option<Result<Released, BackendError>> {
        Some(Ok(self.release_now(owner)))
    }
}
