//! The edges of the serializer's ticket design (see the `ticket` module of
//! `serializer`), each on every executor: a ticket cancelled after it
//! waited, tickets given back at the tail, a granted turn dropped unpolled
//! after a release that took no mutex, a panic with a turn waiting, a batch
//! of calls that all find their ticket served at their first poll, and many
//! turns polled in reverse call order.

#![allow(clippy::unwrap_used)]

mod support;

use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use futures::channel::oneshot;
use futures::{FutureExt, poll};
use heldlock_core::{Serializer, Turn};

type Log = Arc<Mutex<Vec<usize>>>;

fn entries(log: &Log) -> Vec<usize> {
    log.lock().unwrap().clone()
}

/// A task that records `id` in `log` when it runs.
fn record(log: &Log, id: usize) -> impl Future<Output = ()> + use<> {
    let log = Arc::clone(log);
    async move { log.lock().unwrap().push(id) }
}

fn turns(s: &Serializer<u8>, n: usize) -> Vec<Pin<Box<Turn<u8>>>> {
    (0..n).map(|_| Box::pin(s.lock(1))).collect()
}

on_every_runtime! {
    async fn a_turn_that_waited_then_was_dropped_is_skipped() {
        let s = Serializer::new();
        let holder = s.lock("k").await;
        let mut second = Box::pin(s.lock("k"));
        let mut third = pin!(s.lock("k"));
        assert!(poll!(second.as_mut()).is_pending());
        assert!(poll!(third.as_mut()).is_pending());
        drop(second); // its slot holds its waker; now it is cancelled
        drop(holder);
        let Poll::Ready(guard) = poll!(third.as_mut()) else {
            panic!("the release did not skip the cancelled ticket");
        };
        assert_eq!(s.pending_keys(), 1);
        drop(guard);
        assert_eq!(s.pending_keys(), 0);
    }

    async fn cancelled_tickets_at_the_tail_are_given_back() {
        let s = Serializer::new();
        let log = Log::default();
        let holder = s.lock(1u8).await;
        let mut kept = pin!(s.serialize(1, record(&log, 1)));
        assert!(poll!(kept.as_mut()).is_pending());
        let mut tail = turns(&s, 3);
        for turn in &mut tail {
            assert!(poll!(turn.as_mut()).is_pending());
        }
        // First to last: two cancelled, then the last given back with them.
        drop(tail);
        let mut later = pin!(s.serialize(1, record(&log, 2)));
        assert!(poll!(later.as_mut()).is_pending());
        drop(holder);
        assert_eq!(poll!(kept.as_mut()), Poll::Ready(()));
        assert_eq!(poll!(later.as_mut()), Poll::Ready(()));
        assert_eq!(entries(&log), [1, 2]);
        assert_eq!(s.pending_keys(), 0);
    }

    async fn once_every_waiter_is_cancelled_the_release_removes_the_key() {
        // Dropped in three orders: first to last (cancelled, then the last
        // gives every number back), last to first (each given back), and
        // from the middle (a cancelled ticket before a live unpolled one).
        for order in [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 4, 0, 3, 1]] {
            let s = Serializer::new();
            let holder = s.lock(1u8).await;
            let mut waiters: Vec<_> = turns(&s, 5).into_iter().map(Some).collect();
            // Some wait (leaving a waker), some are never polled.
            for waiter in waiters.iter_mut().step_by(2).flatten() {
                assert!(poll!(waiter.as_mut()).is_pending());
            }
            for i in order {
                drop(waiters[i].take());
            }
            assert_eq!(s.pending_keys(), 1, "{order:?}: the holder still holds");
            drop(holder);
            assert_eq!(s.pending_keys(), 0, "{order:?}: no ticket is outstanding");
            let again = s.try_lock(1).expect("the key is free");
            drop(again);
        }
    }

    async fn a_granted_turn_dropped_unpolled_after_a_release_without_mutex_passes_on() {
        // No turn waited, so the holder's release swaps `serving` on
        // without the mutex. The turn it grants is dropped before any poll.
        let s = Serializer::new();
        let holder = s.lock("k").await;
        let granted = s.lock("k");
        let mut third = pin!(s.lock("k"));
        drop(holder);
        assert!(format!("{granted:?}").contains("granted: true"), "{granted:?}");
        drop(granted);
        let Poll::Ready(guard) = poll!(third.as_mut()) else {
            panic!("the third turn waits behind a dropped, granted turn");
        };
        drop(guard);
        assert_eq!(s.pending_keys(), 0);
    }

    async fn a_panicking_holder_wakes_the_turn_that_waits() {
        let s = Serializer::new();
        let (open, gate) = oneshot::channel::<()>();
        let task = async move {
            gate.await.unwrap();
            panic!("task panicked on purpose");
        };
        let mut panicking = Box::pin(AssertUnwindSafe(s.serialize("k", task)).catch_unwind());
        assert!(poll!(panicking.as_mut()).is_pending());
        let mut next = pin!(s.serialize("k", async { "next" }));
        assert!(poll!(next.as_mut()).is_pending(), "it waits, leaving its waker");
        open.send(()).unwrap();
        assert!(matches!(poll!(panicking.as_mut()), Poll::Ready(Err(_))));
        assert_eq!(poll!(next.as_mut()), Poll::Ready("next"));
        assert_eq!(s.pending_keys(), 0);
    }

    async fn a_batch_polled_in_call_order_runs_each_call_on_its_first_poll() {
        // The case the tickets are for: calls made at once on a few keys,
        // then polled in call order, as `join_all` does. Each finds its
        // ticket served when first polled, so none ever waits.
        let s = Serializer::new();
        let futures: Vec<_> = (0..1_000usize)
            .map(|i| Box::pin(s.serialize(i % 7, async move { i })))
            .collect();
        assert_eq!(s.pending_keys(), 7);
        for (i, mut future) in futures.into_iter().enumerate() {
            assert_eq!(poll!(future.as_mut()), Poll::Ready(i), "call {i} waited");
        }
        assert_eq!(s.pending_keys(), 0);
    }

    async fn many_turns_polled_in_reverse_call_order_run_in_call_order() {
        let s = Serializer::new();
        let log = Log::default();
        let futures: Vec<_> = (0..200).map(|i| Box::pin(s.serialize("k", record(&log, i)))).collect();
        // In reverse: every call but the first waits, the last one first,
        // so the slots reach far behind the holder before any release.
        let mut waiting = Vec::new();
        for mut future in futures.into_iter().rev() {
            if poll!(future.as_mut()).is_pending() {
                waiting.push(future);
            }
        }
        assert_eq!(waiting.len(), 199);
        futures::future::join_all(waiting).await;
        assert_eq!(entries(&log), (0..200).collect::<Vec<_>>());
        assert_eq!(s.pending_keys(), 0);
    }

    async fn a_spurious_poll_of_a_waiting_turn_keeps_its_place() {
        let s = Serializer::new();
        let log = Log::default();
        let holder = s.lock("k").await;
        let mut first = pin!(s.serialize("k", record(&log, 1)));
        let mut second = pin!(s.serialize("k", record(&log, 2)));
        for _ in 0..3 {
            assert!(poll!(second.as_mut()).is_pending());
            assert!(poll!(first.as_mut()).is_pending());
        }
        drop(holder);
        assert!(poll!(second.as_mut()).is_pending(), "second ran before first");
        assert_eq!(poll!(first.as_mut()), Poll::Ready(()));
        assert_eq!(poll!(second.as_mut()), Poll::Ready(()));
        assert_eq!(entries(&log), [1, 2]);
    }
}

/// Records, when dropped, whether its serializer's key "k" was still held.
struct HeldWhenDropped {
    serializer: Serializer<&'static str>,
    held: Arc<Mutex<Option<bool>>>,
}

impl Drop for HeldWhenDropped {
    fn drop(&mut self) {
        *self.held.lock().unwrap() = Some(self.serializer.try_lock("k").is_none());
    }
}

#[test]
fn a_cancelled_or_panicking_task_is_dropped_before_its_key_passes_on() {
    use std::task::{Context, Waker};
    let s = Serializer::new();
    for panics in [false, true] {
        let held = Arc::new(Mutex::new(None));
        let local = HeldWhenDropped {
            serializer: s.clone(),
            held: Arc::clone(&held),
        };
        let mut task = Box::pin(s.serialize("k", async move {
            let _local = local;
            assert!(!panics, "task panicked on purpose");
            futures::future::pending::<()>().await;
        }));
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| {
            task.as_mut().poll(&mut Context::from_waker(Waker::noop()))
        }));
        assert_eq!(polled.is_err(), panics);
        drop(task);
        assert_eq!(*held.lock().unwrap(), Some(true), "panics: {panics}");
        assert_eq!(s.pending_keys(), 0);
    }
}

#[test]
fn a_task_that_never_started_is_dropped_before_its_key_passes_on() {
    use std::task::{Context, Waker};
    let s = Serializer::new();
    // Granted at once and dropped unpolled; then queued behind a holder,
    // polled, granted by the holder's release and dropped before it is
    // polled again. Either way the task (and what it captured) is dropped
    // while its turn still holds the key.
    for queued in [false, true] {
        let held = Arc::new(Mutex::new(None));
        let captured = HeldWhenDropped {
            serializer: s.clone(),
            held: Arc::clone(&held),
        };
        let holder = if queued { s.try_lock("k") } else { None };
        let mut task = Box::pin(s.serialize("k", async move {
            let _captured = captured;
        }));
        if let Some(holder) = holder {
            let polled = task.as_mut().poll(&mut Context::from_waker(Waker::noop()));
            assert!(polled.is_pending(), "the holder still has the key");
            drop(holder);
        }
        drop(task);
        assert_eq!(*held.lock().unwrap(), Some(true), "queued: {queued}");
        assert_eq!(s.pending_keys(), 0);
    }
}

/// A key whose drop panics when asked to: its copies compare and hash by
/// `id` alone.
#[derive(Clone)]
struct Touchy {
    id: u8,
    panics_on_drop: bool,
}

impl PartialEq for Touchy {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for Touchy {}

impl std::hash::Hash for Touchy {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

impl Drop for Touchy {
    fn drop(&mut self) {
        assert!(!self.panics_on_drop, "the key's drop panicked on purpose");
    }
}

#[test]
fn a_call_whose_key_panics_when_dropped_leaves_no_ticket_behind() {
    let s = Serializer::new();
    let touchy = |panics_on_drop| Touchy {
        id: 1,
        panics_on_drop,
    };
    let holder = s.try_lock(touchy(false)).unwrap();
    // The key is busy, so the entry keeps its own copy and the call's copy
    // is dropped: it panics after the call took its ticket.
    let call = std::panic::catch_unwind(AssertUnwindSafe(|| drop(s.lock(touchy(true)))));
    assert!(call.is_err());
    drop(holder);
    let again = s.try_lock(touchy(false));
    assert!(
        again.is_some(),
        "a ticket of the panicked call holds the key"
    );
    drop(again);
    assert_eq!(s.pending_keys(), 0);
}

#[test]
fn turns_guards_and_tasks_can_be_sent_to_other_threads() {
    fn sendable<T: Send + 'static>(_: &T) {}
    let s = Serializer::<String>::new();
    let turn = s.lock("a".to_string());
    sendable(&turn);
    let guard = s.try_lock("b".to_string()).unwrap();
    sendable(&guard);
    let task = s.serialize("c".to_string(), async { 1 });
    sendable(&task);
    let handle = std::thread::spawn(move || {
        drop(turn);
        drop(guard);
        futures::executor::block_on(task)
    });
    assert_eq!(handle.join().unwrap(), 1);
    assert_eq!(s.pending_keys(), 0);
}
