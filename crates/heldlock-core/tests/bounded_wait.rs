//! Bounded waiting in the lock driver, on virtual time: an acquirer that its
//! backend asks to wait behind an older waiter tries only once its turn
//! comes, or once `poll` passed, and never waits when it may not wait at
//! all. Nothing here sleeps in real time: the `ManualClock` moves only when
//! a test advances it.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_trait::async_trait;
use heldlock_core::{
    BackendError, ChangeListener, Created, Lock, LockBackend, LockOptions, LockRecord, ManualClock,
    MemoryBackend, OptionsError,
};

mod support;

use support::hooked::{Hooked, Hooks};

/// The older waiter's turn, handed on by the test.
#[derive(Debug, Default)]
struct Turn {
    passed: std::sync::atomic::AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

impl Turn {
    fn pass(&self) {
        self.passed.store(true, Ordering::SeqCst);
        self.wakers.lock().unwrap().drain(..).for_each(Waker::wake);
    }

    fn listener(turn: &Arc<Turn>) -> ChangeListener {
        let turn = Arc::clone(turn);
        Box::pin(std::future::poll_fn(move |cx| {
            turn.wakers.lock().unwrap().push(cx.waker().clone());
            if turn.passed.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }))
    }
}

/// Hooks by which a backend always has an older waiter to wait behind, and
/// counts the tries.
#[derive(Debug)]
struct Courteous {
    turn: Arc<Turn>,
    asked: Arc<AtomicUsize>,
    tries: Arc<AtomicUsize>,
}

#[async_trait]
impl Hooks for Courteous {
    async fn try_create(
        &self,
        inner: &dyn LockBackend,
        record: &LockRecord,
    ) -> Result<Created, BackendError> {
        self.tries.fetch_add(1, Ordering::SeqCst);
        inner.try_create(record).await
    }
    fn wait_behind_older(&self, _inner: &dyn LockBackend) -> Option<ChangeListener> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        Some(Turn::listener(&self.turn))
    }
}

struct Fixture {
    clock: ManualClock,
    turn: Arc<Turn>,
    asked: Arc<AtomicUsize>,
    tries: Arc<AtomicUsize>,
    lock: Lock,
}

const POLL: Duration = Duration::from_secs(10);

fn fixture() -> Fixture {
    let clock = ManualClock::new();
    let turn = Arc::new(Turn::default());
    let asked = Arc::new(AtomicUsize::new(0));
    let tries = Arc::new(AtomicUsize::new(0));
    let backend = Hooked::new(
        MemoryBackend::new("bounded"),
        Courteous {
            turn: Arc::clone(&turn),
            asked: Arc::clone(&asked),
            tries: Arc::clone(&tries),
        },
    );
    let options = LockOptions::new(Duration::from_secs(30))
        .poll(POLL)
        .max_wait(Duration::from_secs(60))
        .bounded_wait(Duration::from_millis(1));
    let lock = Lock::new(Arc::new(backend), Arc::new(clock.clone()), options).unwrap();
    Fixture {
        clock,
        turn,
        asked,
        tries,
        lock,
    }
}

fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

#[test]
fn an_acquirer_behind_an_older_waiter_tries_only_when_its_turn_comes() {
    let fx = fixture();
    let mut acquiring = pin!(fx.lock.acquire());
    assert!(
        poll_once(acquiring.as_mut()).is_pending(),
        "it waits its turn"
    );
    assert_eq!(fx.asked.load(Ordering::SeqCst), 1);
    assert_eq!(
        fx.tries.load(Ordering::SeqCst),
        0,
        "it tried a free lock before the older waiter's turn ended"
    );
    fx.turn.pass();
    match poll_once(acquiring.as_mut()) {
        Poll::Ready(Ok(held)) => drop(held),
        other => panic!("the turn must let it try at once: {other:?}"),
    }
    assert_eq!(fx.tries.load(Ordering::SeqCst), 1);
}

#[test]
fn the_wait_behind_an_older_waiter_ends_after_poll() {
    let fx = fixture();
    let mut acquiring = pin!(fx.lock.acquire());
    assert!(poll_once(acquiring.as_mut()).is_pending());
    fx.clock.advance(POLL - Duration::from_millis(1));
    assert!(poll_once(acquiring.as_mut()).is_pending(), "before poll");
    assert_eq!(fx.tries.load(Ordering::SeqCst), 0);
    fx.clock.advance(Duration::from_millis(1));
    match poll_once(acquiring.as_mut()) {
        Poll::Ready(Ok(held)) => drop(held),
        other => panic!("a turn that never comes must not stop the acquirer: {other:?}"),
    }
}

#[test]
fn an_acquirer_that_may_not_wait_never_waits_behind_anyone() {
    let fx = fixture();
    let mut trying = pin!(fx.lock.try_acquire());
    match poll_once(trying.as_mut()) {
        Poll::Ready(Ok(Some(held))) => drop(held),
        other => panic!("try_acquire must try at once: {other:?}"),
    }
    assert_eq!(fx.asked.load(Ordering::SeqCst), 0);
}

#[test]
fn the_bound_is_validated_and_carried_in_the_timing() {
    let stale = Duration::from_secs(30);
    let timing = LockOptions::new(stale).validate().unwrap();
    assert_eq!(timing.bounded_wait, None, "off by default");
    let timing = LockOptions::new(stale)
        .bounded_wait(Duration::ZERO)
        .validate()
        .unwrap();
    assert_eq!(timing.bounded_wait, Some(Duration::ZERO));
    let too_long = Duration::from_secs(400 * 24 * 60 * 60);
    match LockOptions::new(stale).bounded_wait(too_long).validate() {
        Err(OptionsError::OutOfRange { option, value, .. }) => {
            assert_eq!((option, value), ("bounded_wait", too_long));
        }
        other => panic!("a bound over a year must be refused: {other:?}"),
    }
}
