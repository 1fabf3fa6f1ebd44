//! A complete custom `LockBackend`: a lock kept in a versioned key-value
//! store (here an in-process stand-in for one, with compare-and-set), which
//! passes heldlock's conformance suite and then runs under `Lock` exactly as a
//! lock file does.
//!
//! `cargo run -p heldlock --example custom_backend`; `cargo test -p heldlock
//! --example custom_backend` runs the conformance suite on it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use heldlock::backend::{
    BackendError, Broke, Created, Holder, Identity, Inspection, LockBackend, LockRecord, Observed,
    OwnerId, Refreshed, Released,
};
use heldlock::{Lock, LockOptions};

/// What the store keeps under the lock's key: the record, the stamp of its
/// last refresh, and a version that a compare-and-set checks.
#[derive(Clone, Debug)]
struct Entry {
    version: u64,
    record: LockRecord,
    refreshed_at: SystemTime,
}

/// A versioned store holding one key (stands in for etcd, a database row...).
#[derive(Debug, Default)]
struct Store {
    next_version: u64,
    entry: Option<Entry>,
}

/// The backend: one handle per process. Ownership is the version we created,
/// so a peer that copies our record into a new entry does not make it ours.
#[derive(Debug)]
struct KvBackend {
    store: Arc<Mutex<Store>>,
    /// The versions this handle created, by owner.
    mine: Mutex<Vec<(OwnerId, u64)>>,
}

impl KvBackend {
    fn new(store: Arc<Mutex<Store>>) -> Self {
        KvBackend {
            store,
            mine: Mutex::new(Vec::new()),
        }
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn my_version(&self, owner: &OwnerId) -> Option<u64> {
        let mine = self.mine.lock().unwrap_or_else(PoisonError::into_inner);
        mine.iter().find(|(o, _)| o == owner).map(|(_, v)| *v)
    }

    fn observe(entry: &Entry) -> Observed {
        Observed::new(
            Holder::Record(entry.record.clone()),
            Identity::new(entry.version.to_le_bytes().to_vec()),
            entry.refreshed_at,
        )
    }
}

#[async_trait]
impl LockBackend for KvBackend {
    fn resource(&self) -> String {
        "kv:locks/catalog".into()
    }

    async fn try_create(&self, record: &LockRecord) -> Result<Created, BackendError> {
        let mut store = self.store();
        if store.entry.is_some() {
            return Ok(Created::Exists);
        }
        store.next_version += 1;
        let version = store.next_version;
        store.entry = Some(Entry {
            version,
            record: record.clone(),
            refreshed_at: record.acquired_at,
        });
        self.mine
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((record.owner.clone(), version));
        Ok(Created::Created)
    }

    async fn inspect(&self) -> Result<Inspection, BackendError> {
        Ok(match &self.store().entry {
            Some(entry) => Inspection::Present(Self::observe(entry)),
            None => Inspection::Absent,
        })
    }

    async fn refresh(&self, owner: &OwnerId, now: SystemTime) -> Result<Refreshed, BackendError> {
        let version = self.my_version(owner);
        Ok(match (&mut self.store().entry, version) {
            (Some(entry), Some(version)) if entry.version == version => {
                entry.refreshed_at = now;
                Refreshed::Refreshed
            }
            _ => Refreshed::Lost,
        })
    }

    async fn break_if_unchanged(&self, observed: &Observed) -> Result<Broke, BackendError> {
        let mut store = self.store();
        Ok(match &store.entry {
            None => Broke::Absent,
            Some(entry) if Self::observe(entry) == *observed => {
                store.entry = None;
                Broke::Broken
            }
            Some(_) => Broke::Changed,
        })
    }

    async fn release(&self, owner: &OwnerId) -> Result<Released, BackendError> {
        let version = self.my_version(owner);
        self.mine
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(o, _)| o != owner);
        let mut store = self.store();
        Ok(match (&store.entry, version) {
            (None, _) => Released::Absent,
            (Some(entry), Some(version)) if entry.version == version => {
                store.entry = None;
                Released::Released
            }
            (Some(_), _) => Released::NotOurs,
        })
    }

    /// The version that created our entry: every later create takes a
    /// greater one, so it serves as the grant's fencing token
    /// (`HeldLock::fencing_token`; see `examples/fencing.rs`).
    fn fencing_token(&self, owner: &OwnerId) -> Option<u64> {
        self.my_version(owner)
    }
}

#[tokio::main]
async fn main() -> Result<(), heldlock::Error> {
    let store = Arc::new(Mutex::new(Store::default()));
    let options = LockOptions::new(Duration::from_secs(30));
    let a = Lock::new(
        Arc::new(KvBackend::new(Arc::clone(&store))),
        Arc::new(heldlock::tokio::TokioRuntime::new()),
        options.clone(),
    )?;
    let b = Lock::new(
        Arc::new(KvBackend::new(store)),
        Arc::new(heldlock::tokio::TokioRuntime::new()),
        options,
    )?;
    let held = a.acquire().await?;
    assert!(
        b.try_acquire().await?.is_none(),
        "b waits while a holds the lock"
    );
    println!("a holds the lock; b's try_acquire found it busy");
    held.release().await?;
    let held = b.acquire().await?;
    println!("b holds the lock after a released it");
    held.release().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use heldlock_conformance::{BackendFactory, Capabilities, Resource, run_all};

    /// A fresh store per check; each `open` is another process's handle.
    struct Factory;

    impl BackendFactory for Factory {
        fn fresh(&self) -> Result<Box<dyn Resource>, BackendError> {
            let store = Arc::new(Mutex::new(Store::default()));
            Ok(Box::new(
                move || -> Result<Arc<dyn LockBackend>, BackendError> {
                    Ok(Arc::new(KvBackend::new(Arc::clone(&store))))
                },
            ))
        }
    }

    #[tokio::test]
    async fn the_kv_backend_passes_the_conformance_suite() {
        // No `release_blocking`: this backend releases only by awaiting.
        let report = run_all(&Factory, Capabilities::new()).await;
        assert!(report.passed(), "{report}");
    }
}
