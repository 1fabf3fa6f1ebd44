//! heldlock without an async runtime: for build scripts, CLIs, test fixtures.
//!
//! The same core machines and lock-file protocol as the async API, driven on
//! the calling thread; each held lock's heartbeat runs on a thread of its own.
//!
//! ```
//! use std::time::Duration;
//! use heldlock::blocking::FileLock;
//! use heldlock::LockOptions;
//!
//! # let dir = tempfile::tempdir()?;
//! let lock = FileLock::new(dir.path().join("db.lock"), LockOptions::new(Duration::from_secs(30)))?;
//! let held = lock.acquire()?;
//! if held.refresh()? {
//!     // still ours: safe to write
//! }
//! held.release()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::cell::Cell;
use std::fmt;
use std::future::{Future, poll_fn};
use std::path::Path;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant, SystemTime};

use heldlock_core::{
    Clock, Error, Inspection, LockOptions, LockRecord, OwnerId, Released, Sleep, Spawn, Timing,
};

/// Threads as heldlock's runtime: sleeps park the calling thread (inside
/// [`block_on`]), and the heartbeat of each held lock runs on its own thread.
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadRuntime;

impl ThreadRuntime {
    /// The thread runtime (nothing to configure).
    pub fn new() -> Self {
        ThreadRuntime
    }
}

impl Clock for ThreadRuntime {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn instant(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        let deadline = Instant::now() + duration;
        let mut timer_thread = false;
        Box::pin(poll_fn(move |cx: &mut Context<'_>| {
            let now = Instant::now();
            if now >= deadline {
                return Poll::Ready(());
            }
            if !note_deadline(deadline) && !timer_thread {
                // Polled outside `block_on`: nobody parks with our deadline,
                // so a helper thread wakes us instead.
                timer_thread = true;
                let waker = cx.waker().clone();
                let spawned =
                    thread::Builder::new()
                        .name("heldlock-timer".into())
                        .spawn(move || {
                            thread::sleep(deadline.saturating_duration_since(Instant::now()));
                            waker.wake();
                        });
                if spawned.is_err() {
                    // No thread: fall back to busy re-polling rather than hanging.
                    cx.waker().wake_by_ref();
                }
            }
            Poll::Pending
        }))
    }
}

impl Spawn for ThreadRuntime {
    fn spawn(&self, task: Pin<Box<dyn Future<Output = ()> + Send + 'static>>) {
        let spawned = thread::Builder::new()
            .name("heldlock-heartbeat".into())
            .spawn(move || block_on(task));
        if let Err(error) = spawned {
            // Without a heartbeat the lock goes stale after `stale` and peers
            // may break it; holders see that through `refresh()` and `lost`.
            tracing::error!(%error, "could not start the heartbeat thread of a held lock");
        }
    }
}

thread_local! {
    /// Inside `block_on`: the earliest deadline a pending sleep asked for.
    static DEADLINE: Cell<Option<Option<Instant>>> = const { Cell::new(None) };
}

/// Records `deadline` for the enclosing `block_on`; `false` if there is none.
fn note_deadline(deadline: Instant) -> bool {
    DEADLINE.with(|cell| match cell.get() {
        None => false,
        Some(current) => {
            let earliest = current.map_or(deadline, |c| c.min(deadline));
            cell.set(Some(Some(earliest)));
            true
        }
    })
}

struct ThreadWaker {
    thread: Thread,
    woken: AtomicBool,
}

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

/// Runs `future` to completion on the calling thread, parking it while the
/// future waits, until it is woken or the earliest [`ThreadRuntime`] sleep
/// it waits on is due.
///
/// This is public API, the executor that [`ThreadRuntime`] is made for: use
/// it to drive heldlock's generic async API on the thread runtime, for
/// example a [`Lock`](crate::Lock) over a backend of your own or
/// `heldlock_fs::FileLock<ThreadRuntime>`, or to run `heldlock-conformance`
/// on it. [`FileLock`] and [`HeldLock`] in this module call it for you.
///
/// * A [`ThreadRuntime`] sleep polled inside `block_on` parks this thread
///   until its deadline; polled under another executor, each sleep costs a
///   timer thread.
/// * It has no I/O reactor and no timers besides [`ThreadRuntime`]'s: a
///   future that needs a runtime's context panics here (tokio's: "there is
///   no reactor running"); smol's and async-io's futures work, as they run
///   their reactor on a thread of their own.
/// * Calls may nest (a `block_on` inside a future driven by `block_on`); the
///   inner one blocks the outer future's thread until it returns.
/// * A panic in `future` unwinds out of `block_on`.
///
/// ```
/// use std::time::{Duration, Instant};
/// use heldlock::backend::Clock;
/// use heldlock::blocking::{ThreadRuntime, block_on};
///
/// let started = Instant::now();
/// let value = block_on(async {
///     ThreadRuntime::new().sleep(Duration::from_millis(20)).await;
///     7
/// });
/// assert_eq!(value, 7);
/// assert!(started.elapsed() >= Duration::from_millis(20));
/// ```
pub fn block_on<F: Future>(future: F) -> F::Output {
    let waker_state = Arc::new(ThreadWaker {
        thread: thread::current(),
        woken: AtomicBool::new(false),
    });
    let waker = Waker::from(Arc::clone(&waker_state));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    let outer = DEADLINE.with(Cell::get);
    let result = loop {
        DEADLINE.with(|cell| cell.set(Some(None)));
        if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            break value;
        }
        let deadline = DEADLINE.with(Cell::get).flatten();
        if !waker_state.woken.swap(false, Ordering::Acquire) {
            match deadline {
                Some(deadline) => {
                    thread::park_timeout(deadline.saturating_duration_since(Instant::now()))
                }
                None => thread::park(),
            }
            waker_state.woken.store(false, Ordering::Release);
        }
    };
    DEADLINE.with(|cell| cell.set(outer));
    result
}

/// A held lock on one lock file, without an async runtime; see
/// [`heldlock_fs::FileLock`] for the semantics.
#[derive(Clone, Debug)]
pub struct FileLock {
    inner: heldlock_fs::FileLock<ThreadRuntime>,
}

impl FileLock {
    /// A lock on the file at `path`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidResource`] for a path that names no file;
    /// [`Error::Options`] for invalid options.
    pub fn new(path: impl AsRef<Path>, options: LockOptions) -> Result<Self, Error> {
        Ok(FileLock {
            inner: heldlock_fs::FileLock::new(path, options)?,
        })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        self.inner.path()
    }

    /// The validated timings.
    pub fn timing(&self) -> Timing {
        self.inner.timing()
    }

    /// Waits up to `max_wait` for the lock, breaking it if its holder is
    /// judged dead.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] naming the path, the holder and the time waited;
    /// [`Error::Backend`] when a file-system step failed.
    pub fn acquire(&self) -> Result<HeldLock, Error> {
        block_on(self.inner.acquire()).map(|inner| HeldLock { inner })
    }

    /// Tries once without waiting: `Ok(None)` when the lock is busy.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when a file-system step failed.
    pub fn try_acquire(&self) -> Result<Option<HeldLock>, Error> {
        block_on(self.inner.try_acquire()).map(|held| held.map(|inner| HeldLock { inner }))
    }

    /// Runs `task` under the lock, or unlocked (best effort, as the reference
    /// does) when the lock cannot be had; the task learns which from
    /// [`LockState::acquired`]. The lock is released when the task returns,
    /// also if it panics.
    pub fn with_lock<T>(&self, task: impl FnOnce(&LockState) -> T) -> T {
        block_on(
            self.inner
                .with_lock(|state| async move { task(&LockState { inner: state }) }),
        )
    }

    /// Looks at the lock file without touching it.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the file could not be read.
    pub fn inspect(&self) -> Result<Inspection, Error> {
        block_on(self.inner.inspect())
    }
}

/// A lock held through the blocking API; released on drop.
#[must_use = "the lock is released as soon as the guard is dropped"]
#[clippy::has_significant_drop]
pub struct HeldLock {
    inner: heldlock_core::HeldLock,
}

impl HeldLock {
    /// Re-asserts ownership: `Ok(true)` while ours, `Ok(false)` once lost.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the check failed (ownership unknown: do not write).
    pub fn refresh(&self) -> Result<bool, Error> {
        block_on(self.inner.refresh())
    }

    /// Whether ownership is known to be lost.
    pub fn is_lost(&self) -> bool {
        self.inner.is_lost()
    }

    /// Waits up to `timeout` for ownership to be lost; `true` if it was.
    pub fn wait_lost(&self, timeout: Duration) -> bool {
        let mut lost = pin!(self.inner.lost());
        let mut timer = ThreadRuntime.sleep(timeout);
        block_on(poll_fn(|cx| {
            if lost.as_mut().poll(cx).is_ready() {
                Poll::Ready(true)
            } else {
                timer.as_mut().poll(cx).map(|()| false)
            }
        }))
    }

    /// The record we wrote into the lock.
    pub fn record(&self) -> &LockRecord {
        self.inner.record()
    }

    /// The grant's fencing token: always `None` for a lock file, which has
    /// none it could guarantee (see [`crate::HeldLock::fencing_token`]).
    pub fn fencing_token(&self) -> Option<u64> {
        self.inner.fencing_token()
    }

    /// Our owner id.
    pub fn owner(&self) -> &OwnerId {
        self.inner.owner()
    }

    /// Stops the heartbeat and removes the lock if it is still ours.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the file system failed; the lock then goes stale.
    pub fn release(self) -> Result<Released, Error> {
        block_on(self.inner.release())
    }
}

impl fmt::Debug for HeldLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

/// What a task run by [`FileLock::with_lock`] knows about the lock.
#[derive(Clone, Debug)]
pub struct LockState {
    inner: heldlock_core::LockState,
}

impl LockState {
    /// Whether the task runs under the lock (`false`: best effort, unlocked).
    pub fn acquired(&self) -> bool {
        self.inner.acquired()
    }

    /// Re-asserts ownership; `Ok(false)` when lost or never acquired.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the check failed.
    pub fn refresh(&self) -> Result<bool, Error> {
        block_on(self.inner.refresh())
    }

    /// Whether ownership is known to be lost (always `true` when unlocked).
    pub fn is_lost(&self) -> bool {
        self.inner.is_lost()
    }

    /// As [`HeldLock::fencing_token`]: `None` for a lock file.
    pub fn fencing_token(&self) -> Option<u64> {
        self.inner.fencing_token()
    }
}
