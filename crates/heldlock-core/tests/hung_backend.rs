//! A backend that stops answering (a network file system whose server went
//! away) must not hang the lease or the acquisition: `lost()` fires at the
//! lease's end while a refresh hangs, `acquire` gives up at `max_wait` while a
//! step hangs (or within one `poll` past it while steps are merely slow),
//! and a create that completes after the acquisition gave up
//! leaves no lock behind.
//!
//! Virtual time (`ManualClock`) wherever the hang is a future that never
//! completes: nothing then sleeps in real time, and every instant is exact.
//! One test needs real time and threads, since its hang blocks a thread.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use heldlock_core::{
    BackendError, Clock, Error, Holder, Inspection, Lock, LockBackend, LockOptions, LockRecord,
    ManualClock, MemoryBackend, OwnerId, Refreshed,
};

mod support;

use support::gated::Gated;
use support::hooked::{Hooked, Hooks};

const MAX_WAIT: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(100);
const STALE: Duration = Duration::from_secs(3);
const HEARTBEAT: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

fn options() -> LockOptions {
    LockOptions::new(STALE)
        .heartbeat(HEARTBEAT)
        .poll(POLL)
        .max_wait(MAX_WAIT)
}

fn poll_once<F: Future + ?Sized>(future: Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

fn lock_on(backend: impl LockBackend, clock: &ManualClock) -> Lock {
    Lock::new(Arc::new(backend), Arc::new(clock.clone()), options()).unwrap()
}

fn block_on<F: Future>(future: F) -> F::Output {
    futures::executor::block_on(future)
}

/// Runs a handed-over step, whose backend now answers at once, to its end:
/// one poll, so that a task left waiting fails the test instead of hanging it.
fn finish(mut task: Pin<Box<dyn Future<Output = ()> + Send + 'static>>) {
    assert!(
        poll_once(task.as_mut()).is_ready(),
        "the handed-over step must finish by itself"
    );
}

fn assert_timed_out_after(result: Poll<Result<heldlock_core::HeldLock, Error>>, wait: Duration) {
    match result {
        Poll::Ready(Err(Error::Timeout { waited, .. })) => assert_eq!(waited, wait),
        Poll::Ready(Ok(held)) => panic!("acquired, but the backend hangs: {held:?}"),
        Poll::Ready(Err(other)) => panic!("not a timeout: {other}"),
        Poll::Pending => panic!("still waiting at {wait:?}"),
    }
}

#[test]
fn acquire_times_out_at_max_wait_while_try_create_hangs() {
    let clock = ManualClock::new();
    let shared = MemoryBackend::new("create-hangs");
    let backend = Gated::on(&shared);
    backend.hooks.create.close();
    let create = Arc::clone(&backend.hooks.create);
    let lock = lock_on(backend, &clock);

    let mut acquiring = pin!(lock.acquire());
    assert!(poll_once(acquiring.as_mut()).is_pending());
    assert_eq!(create.arrived(), 1, "the create started");
    clock.advance(MAX_WAIT - MS);
    assert!(poll_once(acquiring.as_mut()).is_pending(), "not yet");
    clock.advance(MS);
    assert_timed_out_after(poll_once(acquiring.as_mut()), MAX_WAIT);
    // The create was handed to the runtime, not dropped.
    assert_eq!(clock.take_spawned().len(), 1);
}

#[test]
fn acquire_times_out_at_max_wait_while_inspect_hangs() {
    let clock = ManualClock::new();
    let shared = MemoryBackend::new("inspect-hangs");
    let holder = lock_on(shared.clone(), &clock);
    let held = block_on(holder.acquire()).unwrap();
    let backend = Gated::on(&shared);
    backend.hooks.inspect.close();
    let inspect = Arc::clone(&backend.hooks.inspect);
    let waiter = lock_on(backend, &clock);

    let mut acquiring = pin!(waiter.acquire());
    assert!(poll_once(acquiring.as_mut()).is_pending());
    assert_eq!(
        inspect.arrived(),
        1,
        "busy: the waiter looks, and the look hangs"
    );
    clock.advance(MAX_WAIT - MS);
    assert!(poll_once(acquiring.as_mut()).is_pending(), "not yet");
    let heartbeat = clock.take_spawned();
    assert_eq!(
        heartbeat.len(),
        1,
        "the holder's, started at its first beat"
    );
    clock.advance(MS);
    assert_timed_out_after(poll_once(acquiring.as_mut()), MAX_WAIT);
    // A look is dropped, not handed over: there is nothing to finish.
    assert!(clock.take_spawned().is_empty());
    drop(held);
}

#[test]
fn acquire_times_out_at_max_wait_while_a_break_hangs_and_the_break_still_completes() {
    let clock = ManualClock::new();
    let shared = MemoryBackend::new("break-hangs");
    // A dead holder's lock, an hour old: stale at first sight.
    let dead = LockRecord::for_this_process(clock.now() - Duration::from_secs(3600));
    shared.replace(Holder::Record(dead.clone()), dead.acquired_at);
    let backend = Gated::on(&shared);
    backend.hooks.brk.close();
    let brk = Arc::clone(&backend.hooks.brk);
    let lock = lock_on(backend, &clock);

    let mut acquiring = pin!(lock.acquire());
    assert!(poll_once(acquiring.as_mut()).is_pending());
    assert_eq!(brk.arrived(), 1, "judged stale, and the break hangs");
    clock.advance(MAX_WAIT - MS);
    assert!(poll_once(acquiring.as_mut()).is_pending(), "not yet");
    clock.advance(MS);
    assert_timed_out_after(poll_once(acquiring.as_mut()), MAX_WAIT);

    // A break stopped half-way could leave a marker or trash: it runs on.
    let mut spawned = clock.take_spawned();
    assert_eq!(spawned.len(), 1, "the break was handed over");
    brk.open();
    finish(spawned.pop().unwrap());
    assert_eq!(block_on(shared.inspect()).unwrap(), Inspection::Absent);
}

#[test]
fn a_step_begun_just_before_the_deadline_is_given_poll_to_finish() {
    let clock = ManualClock::new();
    let shared = MemoryBackend::new("last-look");
    let holder = lock_on(shared.clone(), &clock);
    let held = block_on(holder.acquire()).unwrap();
    let _heartbeat = clock.take_spawned();
    let backend = Gated::on(&shared);
    let create = Arc::clone(&backend.hooks.create);
    let waiter = lock_on(backend, &clock);

    let start = clock.instant();
    let step = Duration::from_millis(10);
    let mut acquiring = pin!(waiter.acquire());
    assert!(poll_once(acquiring.as_mut()).is_pending());
    // The waiter backs off (no notification) and tries again and again.
    while clock.instant() - start < MAX_WAIT - POLL / 2 {
        clock.advance(step);
        assert!(poll_once(acquiring.as_mut()).is_pending());
    }
    // From now on a create hangs. The next one comes before the deadline
    // (the waiter's last sleep ends at it), less than `poll` before it.
    create.close();
    let tries = create.arrived();
    while create.arrived() == tries {
        clock.advance(step);
        assert!(poll_once(acquiring.as_mut()).is_pending());
    }
    let begun = clock.instant() - start;
    assert!(begun > MAX_WAIT - POLL && begun <= MAX_WAIT, "{begun:?}");
    // The clock stands where the create began.
    clock.advance(POLL - MS);
    assert!(
        poll_once(acquiring.as_mut()).is_pending(),
        "past the deadline, but within `poll` of the step's start"
    );
    clock.advance(MS);
    assert_timed_out_after(poll_once(acquiring.as_mut()), begun + POLL);
    drop(held);
}

/// Steps that each take `SLOW` of virtual time once the clock reaches
/// `from`: a backend that is slow, not hung.
#[derive(Debug)]
struct SlowFrom {
    clock: ManualClock,
    from: Instant,
}

const SLOW: Duration = Duration::from_millis(90);

impl SlowFrom {
    async fn pace(&self) {
        if self.clock.instant() >= self.from {
            self.clock.sleep(SLOW).await;
        }
    }
}

#[async_trait]
impl Hooks for SlowFrom {
    async fn try_create(
        &self,
        inner: &dyn LockBackend,
        record: &LockRecord,
    ) -> Result<heldlock_core::Created, BackendError> {
        self.pace().await;
        inner.try_create(record).await
    }
    async fn inspect(&self, inner: &dyn LockBackend) -> Result<Inspection, BackendError> {
        self.pace().await;
        inner.inspect().await
    }
}

#[test]
fn slow_steps_past_the_deadline_share_one_poll_of_grace() {
    let clock = ManualClock::new();
    let shared = MemoryBackend::new("slow");
    let holder = lock_on(shared.clone(), &clock);
    let held = block_on(holder.acquire()).unwrap();
    let _heartbeat = clock.take_spawned();
    let start = clock.instant();
    let slow = SlowFrom {
        clock: clock.clone(),
        from: start + MAX_WAIT - Duration::from_millis(30),
    };
    let waiter = lock_on(Hooked::new(shared.clone(), slow), &clock);
    // Fast until 30 ms before the deadline: the waiter tries (a create,
    // then a look) after every sleep, and its sleeps end by the deadline.
    // So the first slow step is a create begun within `poll` of the
    // deadline, and the look after it begins past the deadline: each of
    // them alone would finish within `poll` of its own start.
    let mut acquiring = pin!(waiter.acquire());
    let result = loop {
        if let Poll::Ready(result) = poll_once(acquiring.as_mut()) {
            break result;
        }
        assert!(clock.instant() - start < 2 * MAX_WAIT, "never gave up");
        clock.advance(MS);
    };
    let waited = clock.instant() - start;
    assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}");
    assert!(
        waited > MAX_WAIT,
        "no step ran past the deadline: {waited:?}"
    );
    assert!(
        waited <= MAX_WAIT + POLL,
        "slow steps past the deadline held acquire for {waited:?}, more than \
         max_wait plus one poll"
    );
    drop(held);
}

#[test]
fn a_create_that_completes_after_the_deadline_leaves_no_lock_behind() {
    let clock = ManualClock::new();
    let shared = MemoryBackend::new("late-create");
    let backend = Gated::on(&shared);
    backend.hooks.create.close();
    let create = Arc::clone(&backend.hooks.create);
    let lock = lock_on(backend, &clock);

    let mut acquiring = pin!(lock.acquire());
    assert!(poll_once(acquiring.as_mut()).is_pending());
    clock.advance(MAX_WAIT);
    assert_timed_out_after(poll_once(acquiring.as_mut()), MAX_WAIT);
    let mut spawned = clock.take_spawned();
    assert_eq!(spawned.len(), 1, "the create runs on");

    // The backend answers at last: the lock is created, then released.
    create.open();
    finish(spawned.pop().unwrap());
    assert_eq!(block_on(shared.inspect()).unwrap(), Inspection::Absent);
    assert!(clock.take_spawned().is_empty(), "no heartbeat was started");
}

#[test]
fn a_create_in_flight_when_the_caller_drops_acquire_is_released_once_it_completes() {
    let clock = ManualClock::new();
    let shared = MemoryBackend::new("dropped-acquire");
    let backend = Gated::on(&shared);
    backend.hooks.create.close();
    let create = Arc::clone(&backend.hooks.create);
    let lock = lock_on(backend, &clock);

    {
        let mut acquiring = Box::pin(lock.acquire());
        assert!(poll_once(acquiring.as_mut()).is_pending());
        // The caller gives up (a `select!` whose other branch won).
    }
    let mut spawned = clock.take_spawned();
    assert_eq!(spawned.len(), 1, "the create was handed over");
    create.open();
    finish(spawned.pop().unwrap());
    assert_eq!(block_on(shared.inspect()).unwrap(), Inspection::Absent);
}

#[test]
fn an_abandoned_create_that_finds_the_lock_taken_leaves_the_holder_alone() {
    let clock = ManualClock::new();
    let shared = MemoryBackend::new("abandoned-exists");
    let backend = Gated::on(&shared);
    backend.hooks.create.close();
    let create = Arc::clone(&backend.hooks.create);
    let lock = lock_on(backend, &clock);

    let mut acquiring = Box::pin(lock.acquire());
    assert!(poll_once(acquiring.as_mut()).is_pending());
    drop(acquiring);
    let mut handed_over = clock.take_spawned();
    assert_eq!(handed_over.len(), 1);

    // Meanwhile another process takes the lock.
    let other = lock_on(shared.clone(), &clock);
    let held = block_on(other.acquire()).unwrap();

    create.open();
    finish(handed_over.pop().unwrap());
    let Inspection::Present(observed) = block_on(shared.inspect()).unwrap() else {
        panic!("the other's lock was removed");
    };
    assert_eq!(
        observed.holder.record().map(|r| &r.owner),
        Some(held.owner())
    );
    assert!(block_on(held.refresh()).unwrap(), "still the other's");
}

#[test]
fn try_acquire_gives_a_slow_backend_up_to_max_wait() {
    let clock = ManualClock::new();
    let shared = MemoryBackend::new("slow-try");
    let backend = Gated::on(&shared);
    backend.hooks.create.close();
    let create = Arc::clone(&backend.hooks.create);
    let lock = lock_on(backend, &clock);

    // A backend that answers late, but within `max_wait`: the try succeeds.
    let mut trying = pin!(lock.try_acquire());
    assert!(poll_once(trying.as_mut()).is_pending());
    clock.advance(MAX_WAIT - MS);
    assert!(poll_once(trying.as_mut()).is_pending());
    create.open();
    match poll_once(trying.as_mut()) {
        Poll::Ready(Ok(Some(held))) => drop(held),
        other => panic!("a slow answer within max_wait must count: {other:?}"),
    }

    // One that does not answer within `max_wait`: busy, as far as the try
    // can tell.
    create.close();
    let mut trying = pin!(lock.try_acquire());
    assert!(poll_once(trying.as_mut()).is_pending());
    clock.advance(MAX_WAIT);
    assert!(matches!(poll_once(trying.as_mut()), Poll::Ready(Ok(None))));
}

#[test]
fn lost_fires_at_the_lease_end_while_the_heartbeat_refresh_hangs() {
    let clock = ManualClock::new();
    let shared = MemoryBackend::new("refresh-hangs");
    let backend = Gated::on(&shared);
    let refresh = Arc::clone(&backend.hooks.refresh);
    refresh.close();
    let lock = lock_on(backend, &clock);
    let held = block_on(lock.acquire()).unwrap();
    assert!(
        clock.take_spawned().is_empty(),
        "the heartbeat's task starts at its first beat"
    );
    let mut lost = pin!(held.lost());

    assert!(poll_once(lost.as_mut()).is_pending());
    clock.advance(HEARTBEAT);
    let mut heartbeat = clock.take_spawned().pop().unwrap();
    assert!(poll_once(heartbeat.as_mut()).is_pending());
    assert_eq!(refresh.arrived(), 1, "the first beat's refresh hangs");
    clock.advance(STALE - HEARTBEAT - MS);
    assert!(poll_once(heartbeat.as_mut()).is_pending());
    assert!(poll_once(lost.as_mut()).is_pending(), "not yet");
    assert!(!held.is_lost());
    clock.advance(MS);
    assert!(
        poll_once(lost.as_mut()).is_ready(),
        "the lease ended at the last stamp plus stale"
    );
    assert!(held.is_lost());
    assert!(
        poll_once(heartbeat.as_mut()).is_ready(),
        "the heartbeat stopped"
    );
}

#[test]
fn lost_fires_at_the_lease_end_even_when_the_heartbeat_never_runs() {
    // As when its task is stuck in a call that blocks its worker thread.
    let clock = ManualClock::new();
    let lock = lock_on(MemoryBackend::new("no-heartbeat"), &clock);
    let held = block_on(lock.acquire()).unwrap();
    let _stuck = clock.take_spawned();
    let mut lost = pin!(held.lost());
    assert!(poll_once(lost.as_mut()).is_pending());
    clock.advance(STALE - MS);
    assert!(poll_once(lost.as_mut()).is_pending(), "not yet");
    clock.advance(MS);
    assert!(poll_once(lost.as_mut()).is_ready());
    assert!(held.is_lost());
}

#[test]
fn lost_does_not_fire_while_the_heartbeat_keeps_the_lease() {
    let clock = ManualClock::new();
    let lock = lock_on(MemoryBackend::new("healthy"), &clock);
    let held = block_on(lock.acquire()).unwrap();
    let mut heartbeat;
    {
        let mut lost = pin!(held.lost());
        assert!(poll_once(lost.as_mut()).is_pending());
        clock.advance(HEARTBEAT);
        heartbeat = clock.take_spawned().pop().unwrap();
        for _ in 1..(4 * STALE.as_millis() / HEARTBEAT.as_millis()) {
            assert!(poll_once(heartbeat.as_mut()).is_pending());
            assert!(poll_once(lost.as_mut()).is_pending());
            clock.advance(HEARTBEAT);
        }
        assert!(poll_once(heartbeat.as_mut()).is_pending());
        assert!(poll_once(lost.as_mut()).is_pending());
    }
    assert!(!held.is_lost());
    assert!(block_on(held.refresh()).unwrap());
    block_on(held.release()).unwrap();
    assert!(
        poll_once(heartbeat.as_mut()).is_ready(),
        "release stops the heartbeat"
    );
}

#[test]
fn a_hold_shorter_than_a_heartbeat_starts_no_task() {
    let clock = ManualClock::new();
    let shared = MemoryBackend::new("short-hold");
    let lock = lock_on(shared.clone(), &clock);
    for release in [true, false] {
        let held = block_on(lock.acquire()).unwrap();
        clock.advance(HEARTBEAT - MS);
        if release {
            block_on(held.release()).unwrap();
        } else {
            drop(held);
        }
        clock.advance(STALE);
        assert!(
            clock.take_spawned().is_empty(),
            "released before the first beat: no heartbeat task, and its timer never starts one"
        );
        assert_eq!(block_on(shared.inspect()).unwrap(), Inspection::Absent);
    }
}

#[test]
fn a_refresh_that_hangs_reports_the_loss_at_the_lease_end() {
    let clock = ManualClock::new();
    let shared = MemoryBackend::new("task-refresh-hangs");
    let backend = Gated::on(&shared);
    let refresh = Arc::clone(&backend.hooks.refresh);
    let lock = lock_on(backend, &clock);
    let held = block_on(lock.acquire()).unwrap();
    let _stuck = clock.take_spawned();
    refresh.close();

    let mut refreshing = pin!(held.refresh());
    assert!(poll_once(refreshing.as_mut()).is_pending());
    clock.advance(STALE - MS);
    assert!(poll_once(refreshing.as_mut()).is_pending(), "not yet");
    clock.advance(MS);
    assert!(matches!(
        poll_once(refreshing.as_mut()),
        Poll::Ready(Ok(false))
    ));
    assert!(held.is_lost());
}

/// Hooks whose refresh blocks its thread, as a synchronous system call on
/// a file system whose server is gone does; released by the test at the
/// end so that the thread does not outlive it by long.
#[derive(Debug)]
struct BlockingRefresh {
    unblock: Mutex<std::sync::mpsc::Receiver<()>>,
}

#[async_trait]
impl Hooks for BlockingRefresh {
    async fn refresh(
        &self,
        inner: &dyn LockBackend,
        owner: &OwnerId,
        now: SystemTime,
    ) -> Result<Refreshed, BackendError> {
        {
            let unblock = self.unblock.lock().unwrap();
            let _ = unblock.recv_timeout(Duration::from_secs(30));
        }
        inner.refresh(owner, now).await
    }
}

/// `Clock + Spawn` on async-std, as `heldlock-async-std` has it, for the one
/// real-time test: its timers are driven apart from its executor's threads,
/// so a thread blocked in a task does not stop them. (Tokio's timers are
/// driven by its idle workers: a worker blocked in a system call can hold up
/// every timer of the runtime, which only an offloaded backend avoids.)
#[derive(Debug)]
struct AsyncStd;

impl Clock for AsyncStd {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
    fn instant(&self) -> Instant {
        Instant::now()
    }
    fn sleep(&self, duration: Duration) -> heldlock_core::Sleep {
        Box::pin(async_std::task::sleep(duration))
    }
}

impl heldlock_core::Spawn for AsyncStd {
    fn spawn(&self, task: Pin<Box<dyn Future<Output = ()> + Send + 'static>>) {
        drop(async_std::task::spawn(task));
    }
}

#[test]
fn lost_fires_on_time_while_a_refresh_blocks_the_heartbeats_thread() {
    // Real time: the hang is a blocked thread, which only a real runtime
    // has. The lease is 400 ms; the upper bound allows seconds of
    // scheduling delay on a loaded machine, and is still far below the
    // 30 s the refresh blocks.
    let stale = Duration::from_millis(400);
    let (unblock, blocked) = std::sync::mpsc::channel();
    let backend = Hooked::new(
        MemoryBackend::new("blocking-refresh"),
        BlockingRefresh {
            unblock: Mutex::new(blocked),
        },
    );
    let lock = Lock::new(
        Arc::new(backend),
        Arc::new(AsyncStd),
        LockOptions::new(stale).heartbeat(Duration::from_millis(100)),
    )
    .unwrap();
    let start = Instant::now();
    let elapsed = async_std::task::block_on(async {
        let held = lock.acquire().await.unwrap();
        // The heartbeat's first refresh blocks its thread at 100 ms.
        async_std::future::timeout(Duration::from_secs(10), held.lost())
            .await
            .expect("lost() must fire while the refresh blocks");
        let elapsed = start.elapsed();
        drop(held);
        elapsed
    });
    let _ = unblock.send(());
    assert!(elapsed >= stale - Duration::from_millis(50), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}
