//! Memory: a call on a busy key allocates nothing, and neither does a turn
//! that finds its ticket served at its first poll. This is what keeps a
//! batch of calls (100,000 futures made, then polled, as `join_all` does)
//! no larger than the futures themselves.
//!
//! A counting global allocator measures it, so this binary holds this one
//! test. It counts only the test's own thread: libtest's main thread
//! allocates its channel's waiter list (96 bytes) whenever it first blocks
//! on the test's result, which may fall inside the measured window.

#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use heldlock_core::Serializer;

/// Counts the bytes allocated by a thread while its `COUNTING` is on.
struct CountingAlloc;

thread_local! {
    // Const-initialised and without a destructor, so reading it from inside
    // the allocator never allocates.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}
static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: both methods forward to `System` with the caller's own layout and
// pointer, which upholds `GlobalAlloc`'s contract; the counter is a plain
// atomic and never touches the allocation.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.try_with(Cell::get).unwrap_or(false) {
            ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Bytes this thread allocated while `f` ran.
fn allocated_by(f: impl FnOnce()) -> usize {
    ALLOCATED.store(0, Ordering::SeqCst);
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATED.load(Ordering::SeqCst)
}

#[test]
fn calls_on_a_busy_key_and_their_first_polls_allocate_nothing() {
    const CALLS: usize = 10_000;
    let s = Serializer::new();
    let holder = s.try_lock(7u64).unwrap();
    let mut futures = Vec::with_capacity(CALLS);
    let by_calls = allocated_by(|| {
        for i in 0..CALLS {
            futures.push(s.serialize(7, async move { i }));
        }
    });
    // One waiter slot per call, as before tickets, would be 480 KB here.
    assert_eq!(
        by_calls, 0,
        "{CALLS} calls on a busy key allocated {by_calls} bytes"
    );
    drop(holder);
    let mut cx = Context::from_waker(Waker::noop());
    let by_polls = allocated_by(|| {
        for (i, future) in futures.drain(..).enumerate() {
            let mut future = pin!(future);
            assert_eq!(future.as_mut().poll(&mut cx), Poll::Ready(i));
        }
    });
    assert_eq!(by_polls, 0, "the first polls allocated {by_polls} bytes");
    assert_eq!(s.pending_keys(), 0);
}
