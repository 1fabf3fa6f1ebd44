//! The lock driver on virtual time: what wakes a waiter, and what it asks the
//! host probe. Nothing here sleeps in real time: the `ManualClock` only moves
//! when a test advances it, so a waiter that completes without an advance was
//! woken by something else.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use heldlock_core::{
    ChangeListener, HostProbe, Lock, LockBackend, LockOptions, LockRecord, ManualClock,
    MemoryBackend, OwnerId,
};

mod support;

use support::hooked::{Hooked, Hooks};

/// A one-shot-per-call notification the test fires by hand.
#[derive(Default)]
struct Bell {
    rung: AtomicUsize,
    wakers: Mutex<Vec<Waker>>,
}

impl Bell {
    fn ring(&self) {
        self.rung.fetch_add(1, Ordering::SeqCst);
        self.wakers.lock().unwrap().drain(..).for_each(Waker::wake);
    }

    /// A listener that completes at the first ring after this call.
    fn listener(bell: &Arc<Bell>) -> ChangeListener {
        let bell = Arc::clone(bell);
        let seen = bell.rung.load(Ordering::SeqCst);
        Box::pin(std::future::poll_fn(move |cx| {
            if bell.rung.load(Ordering::SeqCst) != seen {
                return Poll::Ready(());
            }
            bell.wakers.lock().unwrap().push(cx.waker().clone());
            if bell.rung.load(Ordering::SeqCst) != seen {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }))
    }
}

/// Hooks that give a backend change notification driven by a `Bell`.
#[derive(Debug)]
struct Notifying {
    bell: Arc<Bell>,
    listens: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Bell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bell")
    }
}

impl Hooks for Notifying {
    fn listen(&self, _inner: &dyn LockBackend) -> Option<ChangeListener> {
        self.listens.fetch_add(1, Ordering::SeqCst);
        Some(Bell::listener(&self.bell))
    }
}

fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

fn options() -> LockOptions {
    LockOptions::new(Duration::from_secs(30))
        .poll(Duration::from_secs(10))
        .max_wait(Duration::from_secs(60))
}

#[test]
fn a_notified_waiter_wakes_on_the_change_without_any_time_passing() {
    let clock = ManualClock::new();
    let shared = MemoryBackend::new("driver");
    let bell = Arc::new(Bell::default());
    let listens = Arc::new(AtomicUsize::new(0));
    let holder = Lock::new(Arc::new(shared.clone()), Arc::new(clock.clone()), options()).unwrap();
    let waiter_backend = Hooked::new(
        shared.clone(),
        Notifying {
            bell: Arc::clone(&bell),
            listens: Arc::clone(&listens),
        },
    );
    let waiter = Lock::new(Arc::new(waiter_backend), Arc::new(clock.clone()), options()).unwrap();

    let held = futures::executor::block_on(holder.acquire()).unwrap();
    let mut acquiring = pin!(waiter.acquire());
    assert!(
        poll_once(acquiring.as_mut()).is_pending(),
        "busy: the waiter sleeps"
    );
    assert!(
        listens.load(Ordering::SeqCst) >= 1,
        "it subscribed before looking"
    );

    futures::executor::block_on(held.release()).unwrap();
    assert!(
        poll_once(acquiring.as_mut()).is_pending(),
        "a 10 s poll: no time passed, no bell yet"
    );
    bell.ring();
    match poll_once(acquiring.as_mut()) {
        Poll::Ready(Ok(held)) => drop(held),
        other => panic!("the bell must wake the waiter at once: {other:?}"),
    }
}

#[test]
fn a_waiter_without_notification_backs_off_from_one_millisecond() {
    let clock = ManualClock::new();
    let shared = MemoryBackend::new("backoff");
    let holder = Lock::new(Arc::new(shared.clone()), Arc::new(clock.clone()), options()).unwrap();
    let waiter = Lock::new(Arc::new(shared.clone()), Arc::new(clock.clone()), options()).unwrap();
    let held = futures::executor::block_on(holder.acquire()).unwrap();
    let mut acquiring = pin!(waiter.acquire());
    assert!(poll_once(acquiring.as_mut()).is_pending());
    futures::executor::block_on(held.release()).unwrap();
    // The first backoff step is at most 1 ms, far below the 10 s poll.
    clock.advance(Duration::from_millis(1));
    match poll_once(acquiring.as_mut()) {
        Poll::Ready(Ok(held)) => drop(held),
        other => panic!("retried after at most 1 ms: {other:?}"),
    }
}

/// A probe that says every holder is dead, and records what it was asked.
#[derive(Debug, Default)]
struct Undertaker {
    asked: AtomicBool,
}

impl HostProbe for Undertaker {
    fn fields(&self) -> Vec<(String, String)> {
        vec![("host".into(), "test-host".into())]
    }
    fn holder_is_dead(&self, _record: &LockRecord) -> bool {
        self.asked.store(true, Ordering::SeqCst);
        true
    }
}

#[test]
fn a_holder_the_probe_proves_dead_is_broken_without_waiting_for_stale() {
    let clock = ManualClock::new();
    let shared = MemoryBackend::new("dead");
    let holder = Lock::new(Arc::new(shared.clone()), Arc::new(clock.clone()), options()).unwrap();
    let probe = Arc::new(Undertaker::default());
    let waiter = Lock::new(Arc::new(shared.clone()), Arc::new(clock.clone()), options())
        .unwrap()
        .with_host_probe(probe.clone());
    let held = futures::executor::block_on(holder.acquire()).unwrap();
    let fields: Vec<&str> = held
        .record()
        .fields
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(
        fields,
        [LockRecord::STALE_FIELD],
        "no probe: only the declared stale"
    );
    std::mem::forget(held); // the holder "dies" holding the lock
    let taken = futures::executor::block_on(waiter.acquire()).unwrap();
    assert!(probe.asked.load(Ordering::SeqCst));
    assert_eq!(
        taken.record().field("host"),
        Some("test-host"),
        "the probe's fields are written"
    );
}

/// A probe whose verdicts and exit notifications the test gives by hand, per
/// owner id.
#[derive(Debug, Default)]
struct Mortician {
    dead: Mutex<Vec<String>>,
    watched: Mutex<Vec<String>>,
    exits: Arc<Bell>,
}

impl Mortician {
    fn dies(&self, owner: &OwnerId) {
        self.dead.lock().unwrap().push(owner.as_str().to_owned());
        self.exits.ring();
    }
}

impl HostProbe for Mortician {
    fn fields(&self) -> Vec<(String, String)> {
        Vec::new()
    }
    fn holder_is_dead(&self, record: &LockRecord) -> bool {
        self.dead
            .lock()
            .unwrap()
            .iter()
            .any(|o| o == record.owner.as_str())
    }
    fn watch_exit(&self, record: &LockRecord) -> Option<ChangeListener> {
        self.watched
            .lock()
            .unwrap()
            .push(record.owner.as_str().to_owned());
        Some(Bell::listener(&self.exits))
    }
}

#[test]
fn a_waiter_that_loses_the_race_watches_the_winner_die() {
    let clock = ManualClock::new();
    let shared = MemoryBackend::new("race");
    let bell = Arc::new(Bell::default());
    let lock = || Lock::new(Arc::new(shared.clone()), Arc::new(clock.clone()), options()).unwrap();
    let (first, second) = (lock(), lock());
    let probe = Arc::new(Mortician::default());
    let waiter_backend = Hooked::new(
        shared.clone(),
        Notifying {
            bell: Arc::clone(&bell),
            listens: Arc::new(AtomicUsize::new(0)),
        },
    );
    let waiter = Lock::new(Arc::new(waiter_backend), Arc::new(clock.clone()), options())
        .unwrap()
        .with_host_probe(probe.clone());

    let held = futures::executor::block_on(first.acquire()).unwrap();
    let mut acquiring = pin!(waiter.acquire());
    assert!(poll_once(acquiring.as_mut()).is_pending());
    // A release wakes the waiter, but another process takes the lock first.
    futures::executor::block_on(held.release()).unwrap();
    let winner = futures::executor::block_on(second.acquire()).unwrap();
    bell.ring();
    assert!(poll_once(acquiring.as_mut()).is_pending(), "lost the race");
    assert!(
        probe
            .watched
            .lock()
            .unwrap()
            .iter()
            .any(|o| o == winner.record().owner.as_str()),
        "the waiter does not watch the process that now holds the lock"
    );
    // The winner dies holding the lock: the waiter takes over at once, with
    // no time passing (its poll is 10 s).
    probe.dies(&winner.record().owner);
    std::mem::forget(winner);
    match poll_once(acquiring.as_mut()) {
        Poll::Ready(Ok(held)) => drop(held),
        other => panic!("the winner's death went unnoticed: {other:?}"),
    }
}
