//! `HeldLock::fencing_token`: the backend's token for a grant, asked once
//! right after the create that made the lock ours, and strictly greater
//! for every later grant, including one that broke a stale holder's lock.
//! Virtual time (`ManualClock`): nothing here sleeps.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt as _;
use futures::executor::block_on;
use heldlock_core::{
    BackendError, Created, Lock, LockBackend, LockOptions, LockRecord, ManualClock, MemoryBackend,
    OwnerId, Released,
};

mod support;

use support::hooked::{Hooked, Hooks};

/// What the handles of one [`Numbered`] lock share: the last token issued.
#[derive(Debug, Default)]
struct Counter {
    last: u64,
}

/// Hooks by which a `MemoryBackend` numbers its grants: the token is taken
/// under the same lock as the create, so it is fixed at the grant (as etcd's
/// create revision is) and no holder paused between two steps can reorder it.
#[derive(Debug)]
struct Numbered {
    counter: Arc<Mutex<Counter>>,
    /// This handle's tokens, by owner.
    tokens: Mutex<HashMap<OwnerId, u64>>,
    /// How often the core asked for a token.
    asked: AtomicUsize,
}

impl Numbered {
    fn new() -> Hooked<Self> {
        Hooked::new(
            MemoryBackend::new("numbered"),
            Numbered {
                counter: Arc::default(),
                tokens: Mutex::default(),
                asked: AtomicUsize::new(0),
            },
        )
    }
}

impl Hooked<Numbered> {
    /// Another handle on the same lock, as another process would have.
    fn peer(&self) -> Self {
        Hooked::new(
            self.inner.clone(),
            Numbered {
                counter: Arc::clone(&self.hooks.counter),
                tokens: Mutex::default(),
                asked: AtomicUsize::new(0),
            },
        )
    }
}

#[async_trait]
impl Hooks for Numbered {
    async fn try_create(
        &self,
        inner: &dyn LockBackend,
        record: &LockRecord,
    ) -> Result<Created, BackendError> {
        let mut counter = self.counter.lock().unwrap();
        // The memory backend's steps complete at once.
        let created = inner.try_create(record).now_or_never().unwrap()?;
        if created == Created::Created {
            counter.last += 1;
            self.tokens
                .lock()
                .unwrap()
                .insert(record.owner.clone(), counter.last);
        }
        Ok(created)
    }
    async fn release(
        &self,
        inner: &dyn LockBackend,
        owner: &OwnerId,
    ) -> Result<Released, BackendError> {
        self.tokens.lock().unwrap().remove(owner);
        inner.release(owner).await
    }
    fn release_blocking(
        &self,
        inner: &dyn LockBackend,
        owner: &OwnerId,
    ) -> Option<Result<Released, BackendError>> {
        self.tokens.lock().unwrap().remove(owner);
        inner.release_blocking(owner)
    }
    fn fencing_token(&self, _inner: &dyn LockBackend, owner: &OwnerId) -> Option<u64> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        self.tokens.lock().unwrap().get(owner).copied()
    }
}

const STALE: Duration = Duration::from_secs(10);

fn lock_on(backend: Arc<dyn LockBackend>, clock: &ManualClock) -> Lock {
    let options = LockOptions::new(STALE).max_wait(Duration::from_secs(1));
    Lock::new(backend, Arc::new(clock.clone()), options).unwrap()
}

#[test]
fn the_token_is_the_backends_and_grows_with_every_grant() {
    block_on(async {
        let clock = ManualClock::new();
        let a = Arc::new(Numbered::new());
        let b = Arc::new(a.peer());
        let (lock_a, lock_b) = (lock_on(a.clone(), &clock), lock_on(b.clone(), &clock));

        let mut seen = Vec::new();
        for round in 0..3 {
            let held = lock_a.try_acquire().await.unwrap().unwrap();
            assert_eq!(
                held.fencing_token(),
                a.hooks.tokens.lock().unwrap().get(held.owner()).copied(),
                "round {round}: the backend's token for this grant"
            );
            assert!(
                lock_b.try_acquire().await.unwrap().is_none(),
                "A holds it: no grant, no token"
            );
            seen.push(held.fencing_token().unwrap());
            held.release().await.unwrap();

            let held = lock_b.try_acquire().await.unwrap().unwrap();
            seen.push(held.fencing_token().unwrap());
            // Stored at the grant: a later release does not change it.
            drop(held);
        }
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "tokens in grant order: {seen:?}"
        );
        // Asked once per grant (six), never for a try that found it taken.
        assert_eq!(
            a.hooks.asked.load(Ordering::SeqCst) + b.hooks.asked.load(Ordering::SeqCst),
            6
        );
    });
}

#[test]
fn a_grant_that_broke_a_stale_lock_has_a_greater_token_than_the_stale_holder() {
    block_on(async {
        let clock = ManualClock::new();
        let a = Arc::new(Numbered::new());
        let b = Arc::new(a.peer());
        let (lock_a, lock_b) = (lock_on(a.clone(), &clock), lock_on(b.clone(), &clock));

        // A holds it and then stands still (its heartbeat never runs on the
        // manual clock): a holder paused past its lease.
        let paused = lock_a.try_acquire().await.unwrap().unwrap();
        let old = paused.fencing_token().unwrap();
        clock.advance(STALE * 2);
        // B's first try finds it taken; it breaks the stale lock and tries
        // again with the same lease, which must take the new grant's token.
        let taken = lock_b.try_acquire().await.unwrap().unwrap();
        let new = taken.fencing_token().unwrap();
        assert!(new > old, "the later grant's token {new} > {old}");
        // The paused holder keeps the token of its own grant: a resource
        // that saw `new` refuses its writes.
        assert_eq!(paused.fencing_token(), Some(old));
        assert!(!paused.refresh().await.unwrap(), "and it lost the lock");
        taken.release().await.unwrap();
    });
}

#[test]
fn tasks_of_with_lock_see_the_token_and_unlocked_ones_none() {
    block_on(async {
        let clock = ManualClock::new();
        let backend = Arc::new(Numbered::new());
        let lock = lock_on(backend.clone(), &clock);
        let token = lock
            .with_lock(|state| async move { state.fencing_token() })
            .await;
        assert_eq!(token, Some(1));

        // Busy: the task runs unlocked (best effort), without a token.
        let held = lock.try_acquire().await.unwrap().unwrap();
        assert_eq!(held.fencing_token(), Some(2));
        let mut task = pin!(lock.with_lock(|state| async move {
            assert!(!state.acquired());
            state.fencing_token()
        }));
        assert!(futures::poll!(task.as_mut()).is_pending(), "it waits");
        // Past `max_wait` (but not `stale`): it gives up and runs unlocked.
        clock.advance(Duration::from_secs(5));
        assert_eq!(task.await, None);
        held.release().await.unwrap();
    });
}

#[test]
fn backends_without_tokens_give_none_and_wrappers_forward_the_question() {
    block_on(async {
        let clock = ManualClock::new();
        // The provided method: no token.
        let plain = lock_on(Arc::new(MemoryBackend::new("plain")), &clock);
        let held = plain.try_acquire().await.unwrap().unwrap();
        assert_eq!(held.fencing_token(), None);
        held.release().await.unwrap();

        // `Arc<B>` and `Box<B>` are backends that forward every step,
        // the token included.
        let inner = Numbered::new();
        let boxed: Arc<dyn LockBackend> = Arc::new(Box::new(Arc::new(inner)));
        let held = lock_on(boxed, &clock).try_acquire().await.unwrap().unwrap();
        assert_eq!(held.fencing_token(), Some(1));
        held.release().await.unwrap();
    });
}
