//! The keyed-serializer behaviours of the reference (BEHAVIORS.md lines 1-11),
//! plus the semantics heldlock adds, each on every executor.

#![allow(clippy::unwrap_used)]

mod support;

use std::pin::pin;
use std::sync::{Arc, Mutex};

use futures::channel::oneshot;
use futures::{FutureExt, join, poll};
use heldlock_core::Serializer;
use support::yield_now;

type Log = Arc<Mutex<Vec<&'static str>>>;

fn log() -> Log {
    Arc::new(Mutex::new(Vec::new()))
}

fn push(log: &Log, entry: &'static str) {
    log.lock().unwrap().push(entry);
}

fn entries(log: &Log) -> Vec<&'static str> {
    log.lock().unwrap().clone()
}

on_every_runtime! {
    async fn behavior_01_same_key_runs_in_call_order() {
        let s = Serializer::new();
        let log = log();
        let (open, gate) = oneshot::channel::<()>();
        let first = s.serialize("k", {
            let log = log.clone();
            async move {
                push(&log, "first started");
                gate.await.unwrap();
                push(&log, "first done");
            }
        });
        let second = s.serialize("k", { let log = log.clone(); async move { push(&log, "second") } });
        let third = s.serialize("k", { let log = log.clone(); async move { push(&log, "third") } });
        join!(first, second, third, async {
            yield_now().await;
            // The first task is blocked; the other two must still be waiting.
            assert_eq!(entries(&log), ["first started"]);
            open.send(()).unwrap();
        });
        assert_eq!(entries(&log), ["first started", "first done", "second", "third"]);
    }

    async fn behavior_02_other_key_runs_while_first_key_is_blocked() {
        let s = Serializer::new();
        let (open, gate) = oneshot::channel::<()>();
        let mut blocked = pin!(s.serialize("a", async move { gate.await.unwrap(); "a" }));
        assert!(poll!(blocked.as_mut()).is_pending());
        let mut other = pin!(s.serialize("b", async { "b" }));
        // Ready on its first poll: key "b" does not wait for key "a".
        assert_eq!(poll!(other.as_mut()), std::task::Poll::Ready("b"));
        open.send(()).unwrap();
        assert_eq!(blocked.await, "a");
    }

    async fn behavior_03_task_value_reaches_its_caller() {
        let s = Serializer::new();
        let v = s.serialize("k", async { vec![1, 2, 3] }).await;
        assert_eq!(v, [1, 2, 3]);
    }

    async fn behavior_04_failure_does_not_poison_the_chain() {
        // The naive chain the reference warns about runs each task only if
        // the previous one succeeded. The serializer must not: A's error goes
        // to A's caller, and B still runs, after A.
        let s = Serializer::new();
        let log = log();
        let a = s.serialize("k", {
            let log = log.clone();
            async move {
                push(&log, "a started");
                // B must not start while A is suspended.
                yield_now().await;
                push(&log, "a failed");
                Err::<i32, &str>("a failed")
            }
        });
        let b = s.serialize("k", {
            let log = log.clone();
            async move {
                push(&log, "b ran");
                Ok::<i32, &str>(2)
            }
        });
        let (a, b) = join!(a, b);
        assert_eq!(a, Err("a failed"));
        assert_eq!(b, Ok(2));
        assert_eq!(
            entries(&log),
            ["a started", "a failed", "b ran"],
            "B runs after A's failure"
        );
    }

    async fn behavior_05_one_early_failure_does_not_stop_ten_later_tasks() {
        let s = Serializer::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        let failing = s.serialize("k", async { Err::<usize, &str>("boom") });
        let later: Vec<_> = (0..10)
            .map(|i| {
                let log = log.clone();
                s.serialize("k", async move {
                    log.lock().unwrap().push(i);
                    Ok::<usize, &str>(i)
                })
            })
            .collect();
        let (failed, results) = join!(failing, futures::future::join_all(later));
        assert!(failed.is_err());
        assert_eq!(results, (0..10).map(Ok).collect::<Vec<_>>());
        assert_eq!(*log.lock().unwrap(), (0..10).collect::<Vec<_>>());
    }

    async fn behavior_06_failure_on_one_key_does_not_affect_another() {
        let s = Serializer::new();
        let (bad, good) = join!(
            s.serialize("a", async { Err::<(), &str>("a failed") }),
            s.serialize("b", async { Ok::<&str, ()>("b ran") }),
        );
        assert!(bad.is_err());
        assert_eq!(good, Ok("b ran"));
        assert_eq!(s.serialize("a", async { "a again" }).await, "a again");
    }

    async fn behavior_07_entry_removed_after_single_task_settles() {
        let s = Serializer::new();
        s.serialize("k", async {}).await;
        assert_eq!(s.pending_keys(), 0);
    }

    async fn behavior_08_entry_exists_while_queued_and_goes_when_drained() {
        let s = Serializer::new();
        let (open, gate) = oneshot::channel::<()>();
        let first = s.serialize("k", async move { gate.await.unwrap() });
        let second = s.serialize("k", async {});
        assert_eq!(s.pending_keys(), 1, "queued before any poll");
        join!(first, second, async {
            yield_now().await;
            assert_eq!(s.pending_keys(), 1, "held while the first task runs");
            open.send(()).unwrap();
        });
        assert_eq!(s.pending_keys(), 0);
    }

    async fn behavior_09_fifty_sequential_tasks_leave_no_entry() {
        let s = Serializer::new();
        for i in 0..50 {
            assert_eq!(s.serialize("k", async move { i }).await, i);
        }
        assert_eq!(s.pending_keys(), 0);
    }

    async fn behavior_10_empty_key_is_an_ordinary_key() {
        // The reference refuses an empty string key and a task that is not a
        // function at run time. In Rust the task must be a future (a
        // compile-time error otherwise, see the `compile_fail` doctest of
        // `Serializer::serialize`), and a key is any `Eq + Hash + Clone`
        // value: "" is a key like any other, serialized against itself only.
        let s = Serializer::new();
        let (open, gate) = oneshot::channel::<()>();
        let mut held = pin!(s.serialize("", async move { gate.await.unwrap() }));
        assert!(poll!(held.as_mut()).is_pending());
        let mut same = pin!(s.serialize("", async { "second" }));
        assert!(poll!(same.as_mut()).is_pending(), "\"\" serializes against itself");
        assert_eq!(s.serialize("x", async { 1 }).await, 1, "and not against other keys");
        open.send(()).unwrap();
        held.await;
        assert_eq!(same.await, "second");
    }

    async fn behavior_11_process_wide_serialize_orders_same_key() {
        let log = log();
        let (open, gate) = oneshot::channel::<()>();
        let key = "behavior_11 unique key";
        let first = heldlock_core::serialize(key, {
            let log = log.clone();
            async move { gate.await.unwrap(); push(&log, "first") }
        });
        let second = heldlock_core::serialize(key.to_string(), {
            let log = log.clone();
            async move { push(&log, "second") }
        });
        join!(second, first, async { yield_now().await; open.send(()).unwrap() });
        assert_eq!(entries(&log), ["first", "second"]);
    }

    async fn ticket_is_taken_at_call_time_not_first_poll() {
        let s = Serializer::new();
        let log = log();
        let futures: Vec<_> = ["one", "two", "three"]
            .into_iter()
            .map(|name| { let log = log.clone(); s.serialize("k", async move { push(&log, name) }) })
            .collect();
        let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
        // Poll in reverse call order, then drive the unfinished ones, again
        // in reverse call order.
        let mut unfinished = Vec::new();
        for mut f in futures.drain(..).rev() {
            if poll!(f.as_mut()).is_pending() {
                unfinished.push(f);
            }
        }
        futures::future::join_all(unfinished).await;
        assert_eq!(entries(&log), ["one", "two", "three"]);
    }

    async fn err_is_a_value_and_later_tasks_run() {
        let s = Serializer::new();
        let r: Result<(), std::io::Error> = s.serialize("k", async { Err(std::io::Error::other("x")) }).await;
        assert!(r.is_err());
        assert_eq!(s.serialize("k", async { 5 }).await, 5);
        assert_eq!(s.pending_keys(), 0);
    }

    async fn panic_reaches_its_caller_and_next_task_runs() {
        let s = Serializer::new();
        let panicking = std::panic::AssertUnwindSafe(s.serialize("k", async {
            panic!("task panicked on purpose");
        }))
        .catch_unwind();
        let next = s.serialize("k", async { "next ran" });
        let (panicked, next) = join!(panicking, next);
        let payload = panicked.expect_err("the panic reaches the caller");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"task panicked on purpose"));
        assert_eq!(next, "next ran");
        assert_eq!(s.pending_keys(), 0, "nothing is left locked");
    }

    async fn dropping_a_queued_future_leaves_the_queue() {
        let s = Serializer::new();
        let log = log();
        let (open, gate) = oneshot::channel::<()>();
        let first = s.serialize("k", async move { gate.await.unwrap() });
        let dropped = s.serialize("k", { let log = log.clone(); async move { push(&log, "dropped ran") } });
        let third = s.serialize("k", { let log = log.clone(); async move { push(&log, "third") } });
        drop(dropped);
        open.send(()).unwrap();
        join!(first, third);
        assert_eq!(entries(&log), ["third"]);
        assert_eq!(s.pending_keys(), 0);
    }

    async fn dropping_the_running_future_hands_off_at_once() {
        let s = Serializer::new();
        let (_never, gate) = oneshot::channel::<()>();
        let mut running = Box::pin(s.serialize("k", async move { let _ = gate.await; }));
        assert!(poll!(running.as_mut()).is_pending());
        let mut next = pin!(s.serialize("k", async { "next" }));
        assert!(poll!(next.as_mut()).is_pending());
        drop(running);
        assert_eq!(poll!(next.as_mut()), std::task::Poll::Ready("next"));
        assert_eq!(s.pending_keys(), 0);
    }

    async fn dropping_a_granted_but_unpolled_turn_hands_off() {
        let s = Serializer::new();
        let first = s.lock("k").await;
        let granted_never_polled = s.lock("k");
        let mut third = pin!(s.lock("k"));
        drop(first); // grants the second turn, which is never polled
        assert!(poll!(third.as_mut()).is_pending());
        drop(granted_never_polled);
        let guard = third.await;
        assert_eq!(*guard.key(), "k");
        drop(guard);
        assert_eq!(s.pending_keys(), 0);
    }

    async fn many_cancelled_waiters_are_compacted_and_skipped() {
        let s = Serializer::new();
        let holder = s.lock(1u32).await;
        let cancelled: Vec<_> = (0..1000).map(|_| s.lock(1)).collect();
        let survivor = s.lock(1);
        drop(cancelled);
        drop(holder);
        let guard = survivor.await;
        drop(guard);
        assert_eq!(s.pending_keys(), 0);
    }

    async fn a_reused_waiter_slot_carries_no_old_grant() {
        // Queued calls reuse the waiter slots of finished turns; a reused
        // slot must start out waiting, whatever its last turn left in it.
        let s = Serializer::new();
        for round in 0..50u32 {
            let holder = s.lock("k").await;
            let mut second = pin!(s.lock("k"));
            let mut third = pin!(s.lock("k"));
            assert!(poll!(second.as_mut()).is_pending(), "round {round}");
            assert!(poll!(third.as_mut()).is_pending(), "round {round}");
            drop(holder);
            let second = second.await;
            assert!(poll!(third.as_mut()).is_pending(), "round {round}: third ran early");
            drop(second);
            drop(third.await);
        }
        assert_eq!(s.pending_keys(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_producers_on_one_key_never_overlap_on_tokio() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let s = Serializer::new();
    let inside = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let producers: Vec<_> = (0..8)
        .map(|_| {
            let (s, inside, done) = (s.clone(), inside.clone(), done.clone());
            tokio::spawn(async move {
                for _ in 0..500 {
                    let (inside, done) = (inside.clone(), done.clone());
                    s.serialize("shared", async move {
                        assert!(!inside.swap(true, Ordering::SeqCst), "two tasks overlapped");
                        tokio::task::yield_now().await;
                        inside.store(false, Ordering::SeqCst);
                        done.fetch_add(1, Ordering::SeqCst);
                    })
                    .await;
                }
            })
        })
        .collect();
    for p in producers {
        p.await.unwrap();
    }
    assert_eq!(done.load(Ordering::SeqCst), 8 * 500);
    assert_eq!(s.pending_keys(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawned_task_that_panics_releases_the_key() {
    let s = Serializer::new();
    let crashed = tokio::spawn(s.serialize("k", async { panic!("on purpose") }));
    let next = tokio::spawn(s.serialize("k", async { "next" }));
    assert!(crashed.await.unwrap_err().is_panic());
    assert_eq!(next.await.unwrap(), "next");
    assert_eq!(s.pending_keys(), 0);
}

/// A waker whose last drop uses the serializer, as an executor's waker does
/// when it owns the last reference to a task whose future holds a turn.
struct ReentrantWaker(Serializer<&'static str>);

impl std::task::Wake for ReentrantWaker {
    fn wake(self: Arc<Self>) {}
}

impl Drop for ReentrantWaker {
    fn drop(&mut self) {
        // Deadlocks if the serializer drops this waker under its own mutex.
        let _ = self.0.pending_keys();
    }
}

#[test]
fn a_cancelled_turn_does_not_drop_its_waker_under_the_serializer_lock() {
    use std::future::Future;
    use std::sync::mpsc;
    use std::task::{Context, Waker};
    use std::time::Duration;

    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let s = Serializer::new();
        let holder = s.try_lock("k").expect("nobody holds k");
        let mut turn = Box::pin(s.lock("k"));
        let waker = Waker::from(Arc::new(ReentrantWaker(s.clone())));
        assert!(
            turn.as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        // Two live waiters behind keep the tombstone from being compacted
        // away at once, so the hand-off is what frees it.
        let (second, third) = (s.lock("k"), s.lock("k"));
        drop(waker); // the turn now holds the only reference
        drop(turn); // cancelled: leaves a tombstone behind the holder
        drop(holder); // the hand-off skips (and frees) the tombstone
        drop(second);
        drop(third);
        assert_eq!(s.pending_keys(), 0);
        let _ = done.send(());
    });
    // Real time is the thing under test here (a deadlock never returns), so
    // the margin is generous: the body takes microseconds.
    finished
        .recv_timeout(Duration::from_secs(30))
        .expect("the serializer dropped a waker under its own lock and deadlocked");
}
