//! Fencing tokens: how the resource a lock protects refuses the write of a
//! holder that was paused past its lease, which no `refresh()` can catch.
//!
//! The lock lives in a versioned store (an in-process stand-in for etcd,
//! whose backend gives the key's create revision the same way): the
//! version that creates the lock's entry is the grant's fencing token,
//! fixed by the create itself. The resource remembers the highest token
//! it has seen and refuses any write that carries a lower one.
//!
//! `cargo run -p heldlock --example fencing` (its test runs the same story:
//! `cargo test -p heldlock --example fencing`).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use heldlock::backend::{
    BackendError, Broke, Created, Holder, Identity, Inspection, LockBackend, LockRecord, Observed,
    OwnerId, Refreshed, Released,
};
use heldlock::{Lock, LockOptions};

// ---- the resource: refuses writes older than the newest it has seen ----

/// What a fenced resource keeps: the data, and the highest token seen.
#[derive(Debug, Default)]
struct Storage {
    highest: u64,
    value: String,
}

/// A write carried a token lower than one the storage has already seen.
#[derive(Debug)]
struct Rejected {
    token: u64,
    highest: u64,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "write refused: token {} is lower than {}, the highest seen",
            self.token, self.highest
        )
    }
}

impl std::error::Error for Rejected {}

impl Storage {
    /// The whole check: a write is taken only with a token at least as
    /// high as every token seen before (equal: the same grant writing
    /// again), and taking it raises the bar.
    fn write(&mut self, token: u64, value: &str) -> Result<(), Rejected> {
        if token < self.highest {
            return Err(Rejected {
                token,
                highest: self.highest,
            });
        }
        self.highest = token;
        self.value = value.to_owned();
        Ok(())
    }
}

// ---- the lock: a versioned store, one key, versions as tokens ----

#[derive(Debug, Default)]
struct Store {
    version: u64,
    /// The lock's entry: the version that created it, the holder's
    /// record, its last refresh.
    entry: Option<(u64, LockRecord, SystemTime)>,
}

impl Store {
    /// The entry as a contender sees it.
    fn observed(&self) -> Option<Observed> {
        let (version, record, refreshed_at) = self.entry.as_ref()?;
        Some(Observed::new(
            Holder::Record(record.clone()),
            Identity::new(version.to_le_bytes().to_vec()),
            *refreshed_at,
        ))
    }
}

/// One handle on the store, as one process would have.
#[derive(Debug)]
struct StoreBackend {
    store: Arc<Mutex<Store>>,
    /// The versions this handle created, by owner.
    mine: Mutex<Vec<(OwnerId, u64)>>,
}

impl StoreBackend {
    fn new(store: &Arc<Mutex<Store>>) -> Self {
        StoreBackend {
            store: Arc::clone(store),
            mine: Mutex::new(Vec::new()),
        }
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn mine(&self, owner: &OwnerId) -> Option<u64> {
        let mine = self.mine.lock().unwrap_or_else(PoisonError::into_inner);
        mine.iter().find(|(o, _)| o == owner).map(|(_, v)| *v)
    }

    /// Ends the current holder's entry, as etcd does when a paused
    /// holder's lease lapses.
    fn expire(store: &Arc<Mutex<Store>>) {
        store.lock().unwrap_or_else(PoisonError::into_inner).entry = None;
    }
}

#[async_trait]
impl LockBackend for StoreBackend {
    fn resource(&self) -> String {
        "store:locks/report".into()
    }

    async fn try_create(&self, record: &LockRecord) -> Result<Created, BackendError> {
        let mut store = self.store();
        if store.entry.is_some() {
            return Ok(Created::Exists);
        }
        // The token is fixed here, in the step that grants the lock.
        store.version += 1;
        let version = store.version;
        store.entry = Some((version, record.clone(), record.acquired_at));
        let mut mine = self.mine.lock().unwrap_or_else(PoisonError::into_inner);
        mine.push((record.owner.clone(), version));
        Ok(Created::Created)
    }

    async fn inspect(&self) -> Result<Inspection, BackendError> {
        Ok(match self.store().observed() {
            Some(observed) => Inspection::Present(observed),
            None => Inspection::Absent,
        })
    }

    async fn refresh(&self, owner: &OwnerId, now: SystemTime) -> Result<Refreshed, BackendError> {
        let mine = self.mine(owner);
        Ok(match &mut self.store().entry {
            Some((version, _, refreshed_at)) if Some(*version) == mine => {
                *refreshed_at = now;
                Refreshed::Refreshed
            }
            _ => Refreshed::Lost,
        })
    }

    async fn break_if_unchanged(&self, observed: &Observed) -> Result<Broke, BackendError> {
        let mut store = self.store();
        Ok(match store.observed() {
            None => Broke::Absent,
            Some(current) if current == *observed => {
                store.entry = None;
                Broke::Broken
            }
            Some(_) => Broke::Changed,
        })
    }

    async fn release(&self, owner: &OwnerId) -> Result<Released, BackendError> {
        let mine = self.mine(owner);
        let mut store = self.store();
        Ok(match &store.entry {
            None => Released::Absent,
            Some((version, _, _)) if Some(*version) == mine => {
                store.entry = None;
                Released::Released
            }
            Some(_) => Released::NotOurs,
        })
    }

    /// The version that created the lock `owner` holds: greater for every
    /// later grant, since each create takes the next version.
    fn fencing_token(&self, owner: &OwnerId) -> Option<u64> {
        self.mine(owner)
    }
}

// ---- the story ----

/// A holder reads, checks the lock, is paused; meanwhile its lease lapses
/// and another holder writes. Returns the storage's final value.
async fn story() -> Result<String, Box<dyn std::error::Error>> {
    let store = Arc::new(Mutex::new(Store::default()));
    let storage = Mutex::new(Storage::default());
    let options = LockOptions::new(Duration::from_secs(30));
    let runtime = Arc::new(heldlock::tokio::TokioRuntime::new());
    let a = Lock::new(
        Arc::new(StoreBackend::new(&store)),
        runtime.clone(),
        options.clone(),
    )?;
    let b = Lock::new(Arc::new(StoreBackend::new(&store)), runtime, options)?;

    let held_a = a.acquire().await?;
    let token_a = held_a.fencing_token().ok_or("this backend gives tokens")?;
    println!("A holds the lock with token {token_a}");
    assert!(held_a.refresh().await?, "still A's right before its write");
    // ... and here A is paused (a stop-the-world pause, a suspended VM)
    // past its lease, between its refresh and its write: its lease lapses.
    StoreBackend::expire(&store);

    let held_b = b.acquire().await?;
    let token_b = held_b.fencing_token().ok_or("this backend gives tokens")?;
    println!("B holds the lock with token {token_b}");
    storage
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .write(token_b, "B's report")?;
    held_b.release().await?;

    // A resumes and writes what it computed before the pause.
    match storage
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .write(token_a, "A's stale report")
    {
        Ok(()) => return Err("the storage took a stale write".into()),
        Err(rejected) => println!("A's {rejected}"),
    }
    // Its release finds the lock gone (`Released::Absent`, with a warning).
    held_a.release().await?;
    let value = storage
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .value
        .clone();
    Ok(value)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let value = story().await?;
    println!("the storage holds {value:?}");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_paused_holders_write_is_refused() {
        let value = super::story().await.expect("the story runs");
        assert_eq!(value, "B's report");
    }
}
