//! Property test: concurrent submitters. Two or three threads, each with its
//! own clone of one `Serializer`, run random programs of `serialize`,
//! `lock`, `try_lock`, a turn dropped unpolled and a turn polled once and
//! dropped, over two keys. Each call is stamped from one atomic clock just
//! before it is made and just after it returned (its place is taken by
//! then). Checked:
//!
//! * at most one call per key is inside its critical section;
//! * first come, first served across threads: a call on a key that returned
//!   before another call on that key was made enters before it;
//! * every `serialize` and `lock` call enters, and a dropped turn never does;
//! * every submitter finishes (a lost wake-up would leave one blocked: the
//!   test gives up on it after a minute and fails);
//! * `pending_keys() == 0` at the end.
//!
//! `serializer_model.rs` explores interleavings deterministically; this test
//! adds what only real threads do (a release and a new call at once).

#![allow(clippy::unwrap_used)]

use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::executor::block_on;
use heldlock_core::Serializer;
use proptest::prelude::*;

const KEYS: usize = 2;

/// How long all submitters of a case may take before the test calls them
/// stuck. A case takes milliseconds; the bound is for a loaded machine.
const STUCK_AFTER: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Serialize,
    Lock,
    TryLock,
    /// `lock`, then the turn is dropped without being polled.
    DropTurn,
    /// `lock`, polled once (with a waker that does nothing), then dropped
    /// if it is not this call's turn yet.
    PollOnceThenDrop,
}

fn call() -> impl Strategy<Value = (Call, usize, u8)> {
    let call = prop_oneof![
        3 => Just(Call::Serialize),
        3 => Just(Call::Lock),
        2 => Just(Call::TryLock),
        1 => Just(Call::DropTurn),
        1 => Just(Call::PollOnceThenDrop),
    ];
    // The key, and how many times the critical section yields its thread.
    (call, 0..KEYS, 0u8..3)
}

/// One call as it happened.
#[derive(Clone, Copy, Debug)]
struct Stamp {
    call: Call,
    key: usize,
    id: usize,
    before: u64,
    after: u64,
}

#[derive(Default)]
struct Shared {
    clock: AtomicU64,
    inside: [AtomicUsize; KEYS],
    overlap: AtomicBool,
    /// Per key, the ids of the calls that entered, in the order they did.
    entered: [Mutex<Vec<usize>>; KEYS],
}

impl Shared {
    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }

    fn section(&self, key: usize, id: usize, yields: u8) {
        if self.inside[key].fetch_add(1, Ordering::SeqCst) != 0 {
            self.overlap.store(true, Ordering::SeqCst);
        }
        self.entered[key].lock().unwrap().push(id);
        for _ in 0..yields {
            std::thread::yield_now();
        }
        self.inside[key].fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs one submitter's program; returns its stamps.
fn submit(
    serializer: &Serializer<usize>,
    shared: &Arc<Shared>,
    thread: usize,
    program: &[(Call, usize, u8)],
) -> Vec<Stamp> {
    let mut stamps = Vec::new();
    for (i, &(call, key, yields)) in program.iter().enumerate() {
        let id = thread * 1_000 + i;
        let before = shared.tick();
        let after = match call {
            Call::Serialize => {
                let inner = Arc::clone(shared);
                let task = serializer.serialize(key, async move { inner.section(key, id, yields) });
                let after = shared.tick();
                block_on(task);
                after
            }
            Call::Lock => {
                let turn = serializer.lock(key);
                let after = shared.tick();
                let guard = block_on(turn);
                shared.section(key, id, yields);
                drop(guard);
                after
            }
            Call::TryLock => {
                let guard = serializer.try_lock(key);
                let after = shared.tick();
                if guard.is_some() {
                    shared.section(key, id, yields);
                }
                drop(guard);
                after
            }
            Call::DropTurn => {
                let turn = serializer.lock(key);
                let after = shared.tick();
                drop(turn);
                after
            }
            Call::PollOnceThenDrop => {
                let mut turn = pin!(serializer.lock(key));
                let after = shared.tick();
                let mut cx = Context::from_waker(Waker::noop());
                if let Poll::Ready(guard) = turn.as_mut().poll(&mut cx) {
                    shared.section(key, id, yields);
                    drop(guard);
                }
                after
            }
        };
        stamps.push(Stamp {
            call,
            key,
            id,
            before,
            after,
        });
    }
    stamps
}

fn run(programs: &[Vec<(Call, usize, u8)>]) -> Result<(), TestCaseError> {
    let serializer = Serializer::new();
    let shared = Arc::new(Shared::default());
    let (done, finished) = mpsc::channel();
    for (thread, program) in programs.iter().enumerate() {
        let (serializer, shared, done) = (serializer.clone(), Arc::clone(&shared), done.clone());
        let program = program.clone();
        std::thread::spawn(move || {
            let _ = done.send(submit(&serializer, &shared, thread, &program));
        });
    }
    drop(done);
    let mut stamps = Vec::new();
    for _ in programs {
        match finished.recv_timeout(STUCK_AFTER) {
            Ok(mine) => stamps.extend(mine),
            Err(error) => {
                prop_assert!(false, "a submitter never finished (lost wake-up?): {error}");
            }
        }
    }
    prop_assert!(
        !shared.overlap.load(Ordering::SeqCst),
        "two calls of one key were inside at once"
    );
    for key in 0..KEYS {
        let entered = shared.entered[key].lock().unwrap().clone();
        let position = |id: usize| entered.iter().position(|&e| e == id);
        for s in stamps.iter().filter(|s| s.key == key) {
            let at = position(s.id);
            match s.call {
                Call::Serialize | Call::Lock => {
                    prop_assert!(at.is_some(), "{s:?} never entered");
                }
                Call::DropTurn => prop_assert!(at.is_none(), "{s:?} entered"),
                Call::TryLock | Call::PollOnceThenDrop => {}
            }
            let Some(at) = at else { continue };
            for later in stamps.iter().filter(|l| l.key == key && s.after < l.before) {
                if let Some(later_at) = position(later.id) {
                    prop_assert!(
                        at < later_at,
                        "{later:?} was called after {s:?} returned, but entered first: {entered:?}"
                    );
                }
            }
        }
    }
    prop_assert_eq!(serializer.pending_keys(), 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn serializer_with_concurrent_submitters(
        programs in prop::collection::vec(prop::collection::vec(call(), 1..16), 2..=3),
    ) {
        run(&programs)?;
    }
}
