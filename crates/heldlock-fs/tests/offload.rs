//! `Offload`: a backend whose steps block their thread, run on a worker
//! thread, so that the core's deadlines hold again.
//!
//! The blocking steps sleep in real time (`std::thread::sleep`), standing in
//! for a system call on a network file system whose server is gone. Lock
//! deadlines run on virtual time (`ManualClock`); real time is only measured
//! to show that a poll did not block, with margins of seconds against the
//! sleeps it would have blocked for.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread::ThreadId;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use heldlock_core::{
    BackendError, Broke, Created, Error, Inspection, Lock, LockBackend, LockOptions, LockRecord,
    ManualClock, MemoryBackend, Observed, OwnerId, Refreshed, Released,
};
use heldlock_fs::Offload;

/// `MemoryBackend` whose create and release block their thread for a while,
/// and which notes the threads its steps ran on.
#[derive(Debug)]
struct Blocking {
    inner: MemoryBackend,
    create_blocks: Duration,
    release_blocks: Duration,
    threads: Arc<Mutex<Vec<ThreadId>>>,
    inspects: Arc<AtomicUsize>,
    panic_next_inspect: Arc<AtomicBool>,
    /// Dropped with the backend: tells the test the worker let go of it.
    _alive: Arc<()>,
}

impl Blocking {
    fn new(inner: &MemoryBackend, alive: &Arc<()>) -> Self {
        Blocking {
            inner: inner.clone(),
            create_blocks: Duration::ZERO,
            release_blocks: Duration::ZERO,
            threads: Arc::default(),
            inspects: Arc::default(),
            panic_next_inspect: Arc::default(),
            _alive: Arc::clone(alive),
        }
    }

    fn note_thread(&self) {
        self.threads
            .lock()
            .unwrap()
            .push(std::thread::current().id());
    }
}

#[async_trait]
impl LockBackend for Blocking {
    fn resource(&self) -> String {
        self.inner.resource()
    }
    async fn try_create(&self, record: &LockRecord) -> Result<Created, BackendError> {
        self.note_thread();
        std::thread::sleep(self.create_blocks);
        self.inner.try_create(record).await
    }
    async fn inspect(&self) -> Result<Inspection, BackendError> {
        self.note_thread();
        self.inspects.fetch_add(1, Ordering::SeqCst);
        assert!(
            !self.panic_next_inspect.swap(false, Ordering::SeqCst),
            "a backend bug"
        );
        self.inner.inspect().await
    }
    async fn refresh(&self, owner: &OwnerId, now: SystemTime) -> Result<Refreshed, BackendError> {
        self.note_thread();
        self.inner.refresh(owner, now).await
    }
    async fn break_if_unchanged(&self, observed: &Observed) -> Result<Broke, BackendError> {
        self.note_thread();
        self.inner.break_if_unchanged(observed).await
    }
    async fn release(&self, owner: &OwnerId) -> Result<Released, BackendError> {
        self.note_thread();
        std::thread::sleep(self.release_blocks);
        self.inner.release(owner).await
    }
}

fn poll_once<F: Future + ?Sized>(future: Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

fn block_on<F: Future>(future: F) -> F::Output {
    futures::executor::block_on(future)
}

/// Polls `done` every 10 ms for up to `limit`.
fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    done()
}

#[test]
fn an_offloaded_blocking_create_honours_max_wait_and_leaves_no_lock() {
    let blocks = Duration::from_millis(1500);
    let max_wait = Duration::from_secs(1);
    let clock = ManualClock::new();
    let shared = MemoryBackend::new("blocking-create");
    let alive = Arc::new(());
    let mut backend = Blocking::new(&shared, &alive);
    backend.create_blocks = blocks;
    let lock = Lock::new(
        Arc::new(Offload::new(backend)),
        Arc::new(clock.clone()),
        LockOptions::new(Duration::from_secs(30)).max_wait(max_wait),
    )
    .unwrap();

    let mut acquiring = pin!(lock.acquire());
    let polled = Instant::now();
    assert!(poll_once(acquiring.as_mut()).is_pending());
    // Inline, this poll would have slept the whole 1.5 s.
    assert!(polled.elapsed() < blocks / 2, "{:?}", polled.elapsed());
    clock.advance(max_wait);
    match poll_once(acquiring.as_mut()) {
        Poll::Ready(Err(Error::Timeout { waited, .. })) => assert_eq!(waited, max_wait),
        other => panic!("must time out at max_wait: {other:?}"),
    }
    assert!(polled.elapsed() < blocks, "{:?}", polled.elapsed());

    // The create goes on on the worker, and its lock is released there.
    let mut spawned = clock.take_spawned();
    assert_eq!(spawned.len(), 1, "the create was handed to the runtime");
    block_on(spawned.pop().unwrap());
    assert_eq!(block_on(shared.inspect()).unwrap(), Inspection::Absent);
}

#[test]
fn the_worker_starts_lazily_is_reused_and_exits_when_idle_or_dropped() {
    let shared = MemoryBackend::new("worker");
    let alive = Arc::new(());
    let backend = Blocking::new(&shared, &alive);
    let threads = Arc::clone(&backend.threads);
    let offload = Offload::new(backend).idle_exit(Duration::from_millis(100));
    assert!(format!("{offload:?}").contains("worker_running: false"));

    block_on(offload.inspect()).unwrap();
    block_on(offload.inspect()).unwrap();
    let seen = threads.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0], seen[1], "one long-lived worker");
    assert_ne!(seen[0], std::thread::current().id(), "not the caller's");

    // Idle for longer than `idle_exit`: the worker goes; the next step
    // starts another.
    assert!(eventually(Duration::from_secs(5), || {
        !format!("{offload:?}").contains("worker_running: true")
    }));
    block_on(offload.inspect()).unwrap();
    let seen = threads.lock().unwrap().clone();
    assert_ne!(seen[2], seen[0], "a new worker after the idle exit");

    // Dropped: the worker exits and lets go of the backend.
    drop(offload);
    assert!(eventually(Duration::from_secs(5), || Arc::strong_count(
        &alive
    ) == 1));
}

#[test]
fn a_guard_dropped_releases_through_the_worker() {
    let clock = ManualClock::new();
    let shared = MemoryBackend::new("drop");
    let alive = Arc::new(());
    let lock = Lock::new(
        Arc::new(Offload::new(Blocking::new(&shared, &alive))),
        Arc::new(clock.clone()),
        LockOptions::new(Duration::from_secs(30)),
    )
    .unwrap();
    let held = block_on(lock.acquire()).unwrap();
    assert!(matches!(
        block_on(shared.inspect()).unwrap(),
        Inspection::Present(_)
    ));
    drop(held);
    assert_eq!(block_on(shared.inspect()).unwrap(), Inspection::Absent);
}

#[test]
fn a_drop_whose_release_blocks_returns_after_drop_wait_and_the_release_completes() {
    let shared = MemoryBackend::new("slow-release");
    let alive = Arc::new(());
    let mut backend = Blocking::new(&shared, &alive);
    backend.release_blocks = Duration::from_millis(1500);
    let offload = Offload::new(backend).drop_wait(Duration::from_millis(100));
    let record = LockRecord::for_this_process(SystemTime::now());
    assert_eq!(
        block_on(offload.try_create(&record)).unwrap(),
        Created::Created
    );

    let start = Instant::now();
    let released = offload.release_blocking(&record.owner);
    assert!(
        start.elapsed() < Duration::from_millis(1000),
        "{:?}",
        start.elapsed()
    );
    match released {
        Some(Err(error)) => assert_eq!(error.io_kind(), Some(std::io::ErrorKind::TimedOut)),
        other => panic!("a release still running must be reported: {other:?}"),
    }
    // It completes on the worker all the same.
    assert!(eventually(Duration::from_secs(10), || {
        block_on(shared.inspect()).unwrap() == Inspection::Absent
    }));
}

#[test]
fn a_step_that_panics_answers_with_an_error_and_the_worker_goes_on() {
    let shared = MemoryBackend::new("panics");
    let alive = Arc::new(());
    let backend = Blocking::new(&shared, &alive);
    let panic_next = Arc::clone(&backend.panic_next_inspect);
    let threads = Arc::clone(&backend.threads);
    let offload = Offload::new(backend);
    panic_next.store(true, Ordering::SeqCst);
    let error = block_on(offload.inspect()).unwrap_err();
    assert!(error.to_string().contains("panicked"), "{error}");
    assert_eq!(block_on(offload.inspect()).unwrap(), Inspection::Absent);
    let seen = threads.lock().unwrap().clone();
    assert_eq!(seen[0], seen[1], "the same worker");
}

#[test]
fn a_step_dropped_before_it_starts_is_skipped_but_a_release_is_not() {
    let shared = MemoryBackend::new("skipped");
    let alive = Arc::new(());
    let mut backend = Blocking::new(&shared, &alive);
    backend.create_blocks = Duration::from_millis(300);
    let inspects = Arc::clone(&backend.inspects);
    let offload = Offload::new(backend);
    let record = LockRecord::for_this_process(SystemTime::now());

    // The create keeps the worker busy while the next two are queued.
    let mut creating = pin!(offload.try_create(&record));
    assert!(poll_once(creating.as_mut()).is_pending());
    {
        let mut looking = pin!(offload.inspect());
        assert!(poll_once(looking.as_mut()).is_pending());
        let mut releasing = pin!(offload.release(&record.owner));
        assert!(poll_once(releasing.as_mut()).is_pending());
    }
    assert_eq!(block_on(creating).unwrap(), Created::Created);
    assert!(eventually(Duration::from_secs(5), || {
        block_on(shared.inspect()).unwrap() == Inspection::Absent
    }));
    assert_eq!(
        inspects.load(Ordering::SeqCst),
        0,
        "the dropped look was skipped"
    );
}
