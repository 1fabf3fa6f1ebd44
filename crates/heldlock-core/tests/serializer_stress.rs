//! Stress: threads and a multi-thread tokio runtime hammer a few keys with
//! every kind of call at once. It aims at the races of the ticket design:
//! the holder's release that moves `serving` on without the mutex against a
//! turn that starts to wait or gives up at that moment, and a release that
//! removes a key against a call that takes a ticket on it.
//!
//! Checked: no two calls of one key are ever inside at once; the calls of
//! one submitter made in a batch enter in call order; every call that is not
//! cancelled enters (a lost wake-up would leave a submitter blocked: the test
//! gives up after a minute and fails); no key is left at the end.
//! `serializer_threads.rs` checks first-come-first-served across threads.

#![allow(clippy::unwrap_used)]

use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::executor::block_on;
use futures::future::join_all;
use heldlock_core::Serializer;

const KEYS: usize = 3;

/// How long a run may take before the test calls it stuck (it takes well
/// under a second; the bound is for a loaded machine).
const STUCK_AFTER: Duration = Duration::from_secs(60);

/// A small deterministic generator (xorshift), one per submitter.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        usize::try_from(self.0 % n as u64).unwrap()
    }
}

#[derive(Default)]
struct Sections {
    inside: [AtomicBool; KEYS],
    overlap: AtomicBool,
    entered: AtomicUsize,
}

impl Sections {
    /// Enters the critical section of `key` until the result is dropped.
    fn inside(self: &Arc<Self>, key: usize) -> Inside {
        if self.inside[key].swap(true, Ordering::SeqCst) {
            self.overlap.store(true, Ordering::SeqCst);
        }
        self.entered.fetch_add(1, Ordering::SeqCst);
        Inside {
            sections: Arc::clone(self),
            key,
        }
    }

    fn enter(self: &Arc<Self>, key: usize, spin: usize) {
        let _inside = self.inside(key);
        for _ in 0..spin {
            std::hint::spin_loop();
        }
    }
}

/// Leaves the critical section on drop, so cancelled tasks leave it too
/// (a cancelled task is dropped before its key passes on).
struct Inside {
    sections: Arc<Sections>,
    key: usize,
}

impl Drop for Inside {
    fn drop(&mut self) {
        self.sections.inside[self.key].store(false, Ordering::SeqCst);
    }
}

/// One submitter thread: `rounds` random calls; returns how many of them
/// had to enter (a call that may be cancelled is not counted).
fn submitter(s: &Serializer<usize>, sections: &Arc<Sections>, seed: u64, rounds: usize) -> usize {
    let mut rng = Rng(seed);
    let mut must_enter = 0;
    for _ in 0..rounds {
        let key = rng.below(KEYS);
        let spin = rng.below(50);
        match rng.below(6) {
            0 => {
                let inner = Arc::clone(sections);
                block_on(s.serialize(key, async move { inner.enter(key, spin) }));
                must_enter += 1;
            }
            1 => {
                let guard = block_on(s.lock(key));
                sections.enter(key, spin);
                drop(guard);
                must_enter += 1;
            }
            2 => {
                if let Some(guard) = s.try_lock(key) {
                    sections.enter(key, spin);
                    drop(guard);
                    must_enter += 1;
                }
            }
            3 => drop(s.lock(key)),
            4 => {
                let mut turn = pin!(s.lock(key));
                if let Poll::Ready(guard) =
                    turn.as_mut().poll(&mut Context::from_waker(Waker::noop()))
                {
                    sections.enter(key, spin);
                    drop(guard);
                    must_enter += 1;
                }
            }
            _ => {
                // A batch on one key, polled together: must enter in call order.
                let order = Arc::new(Mutex::new(Vec::new()));
                let batch: Vec<_> = (0..4)
                    .map(|i| {
                        let (inner, order) = (Arc::clone(sections), Arc::clone(&order));
                        s.serialize(key, async move {
                            order.lock().unwrap().push(i);
                            inner.enter(key, spin);
                        })
                    })
                    .collect();
                block_on(join_all(batch));
                assert_eq!(
                    *order.lock().unwrap(),
                    [0, 1, 2, 3],
                    "a batch ran out of call order"
                );
                must_enter += 4;
            }
        }
    }
    must_enter
}

#[test]
fn threads_hammering_few_keys_never_overlap_and_never_lose_a_wake_up() {
    const THREADS: u64 = 6;
    const ROUNDS: usize = 20_000;
    let s = Serializer::new();
    let sections = Arc::new(Sections::default());
    let (done, finished) = mpsc::channel();
    for thread in 0..THREADS {
        let (s, sections, done) = (s.clone(), Arc::clone(&sections), done.clone());
        std::thread::spawn(move || {
            let _ = done.send(submitter(&s, &sections, 0x9E37_79B9 + thread, ROUNDS));
        });
    }
    drop(done);
    let mut must_enter = 0;
    for _ in 0..THREADS {
        must_enter += finished
            .recv_timeout(STUCK_AFTER)
            .expect("a submitter never finished (lost wake-up?)");
    }
    assert!(
        !sections.overlap.load(Ordering::SeqCst),
        "two calls of one key were inside at once"
    );
    assert_eq!(sections.entered.load(Ordering::SeqCst), must_enter);
    assert_eq!(s.pending_keys(), 0);
}

#[test]
fn tokio_tasks_with_timeouts_never_overlap_and_leave_no_key() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .unwrap();
    let s = Serializer::new();
    let sections = Arc::new(Sections::default());
    let (done, finished) = mpsc::channel();
    let tasks: Vec<_> = (0..16u64)
        .map(|task| {
            let (s, sections) = (s.clone(), Arc::clone(&sections));
            runtime.spawn(async move {
                let mut rng = Rng(0xC0FF_EE00 + task);
                for _ in 0..400 {
                    let key = rng.below(KEYS);
                    let inner = Arc::clone(&sections);
                    let yields = rng.below(3);
                    let call = s.serialize(key, async move {
                        let _inside = inner.inside(key);
                        for _ in 0..yields {
                            tokio::task::yield_now().await;
                        }
                    });
                    if rng.below(4) == 0 {
                        // Cancelled at once, while waiting, or while inside.
                        let limit = Duration::from_micros(rng.below(50) as u64);
                        let _ = tokio::time::timeout(limit, call).await;
                    } else {
                        call.await;
                    }
                }
            })
        })
        .collect();
    std::thread::spawn(move || {
        runtime.block_on(async {
            for task in tasks {
                task.await.unwrap();
            }
        });
        let _ = done.send(());
    });
    finished
        .recv_timeout(STUCK_AFTER)
        .expect("the tasks never finished (lost wake-up?)");
    assert!(
        !sections.overlap.load(Ordering::SeqCst),
        "two calls of one key were inside at once"
    );
    assert_eq!(s.pending_keys(), 0);
}
