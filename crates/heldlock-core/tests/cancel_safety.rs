//! Cancel safety of `Lock::acquire`, `HeldLock::release` and
//! `HeldLock::refresh`: each future dropped at each of its await points in
//! turn (before its first poll, inside a backend step that has not
//! answered, asleep), and the state that results, as the methods' docs
//! promise it.
//!
//! Virtual time (`ManualClock`, whose `spawn` keeps tasks for the test) over
//! a `MemoryBackend` whose steps wait at gates the test opens: a step that
//! has not answered is a future that stays pending, the point at which a
//! `select!` or a timeout drops its caller.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use heldlock_core::{
    Clock, HeldLock, Holder, Inspection, Lock, LockBackend, LockOptions, LockRecord, ManualClock,
    MemoryBackend, OwnerId, Released,
};

mod support;

use support::gated::{Gated, Gates};

const STALE: Duration = Duration::from_secs(3);
const HEARTBEAT: Duration = Duration::from_secs(1);
const MAX_WAIT: Duration = Duration::from_secs(2);
const MS: Duration = Duration::from_millis(1);

fn options() -> LockOptions {
    LockOptions::new(STALE)
        .heartbeat(HEARTBEAT)
        .poll(Duration::from_millis(100))
        .max_wait(MAX_WAIT)
}

/// A lock on `shared` through a gated handle of its own, and that handle's
/// gates.
fn gated_lock(shared: &MemoryBackend, clock: &ManualClock) -> (Lock, Gates) {
    let gated = Gated::on(shared);
    let gates = gated.hooks.clone();
    let lock = Lock::new(Arc::new(gated), Arc::new(clock.clone()), options()).unwrap();
    (lock, gates)
}

fn poll_once<F: Future + ?Sized>(future: Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

fn block_on<F: Future>(future: F) -> F::Output {
    futures::executor::block_on(future)
}

/// Who holds the lock on `shared`, if anyone.
fn holder(shared: &MemoryBackend) -> Option<OwnerId> {
    match block_on(shared.inspect()).unwrap() {
        Inspection::Present(observed) => Some(observed.holder.record().unwrap().owner.clone()),
        _ => None,
    }
}

/// Runs a handed-over step, whose gate is open by now, to its end.
fn finish(mut task: Pin<Box<dyn Future<Output = ()> + Send + 'static>>) {
    assert!(poll_once(task.as_mut()).is_ready(), "the step must finish");
}

// ---- acquire ----------------------------------------------------------------

#[test]
fn acquire_dropped_before_its_first_poll_does_nothing() {
    let clock = ManualClock::new();
    let shared = MemoryBackend::new("cancel/acquire-unpolled");
    let (lock, gated) = gated_lock(&shared, &clock);
    drop(lock.acquire());
    assert_eq!(gated.steps(), 0, "no backend step");
    assert!(clock.take_spawned().is_empty(), "no task");
    assert_eq!(holder(&shared), None);
}

#[test]
fn acquire_dropped_while_queued_in_process_gives_up_its_place() {
    let clock = ManualClock::new();
    let shared = MemoryBackend::new("cancel/acquire-queued");
    let (first, _) = gated_lock(&shared, &clock);
    let first = first.queue_in_process(true);
    let (second, second_gates) = gated_lock(&shared, &clock);
    let second = second.queue_in_process(true);
    let held = block_on(first.acquire()).unwrap();

    let mut waiting = Box::pin(second.acquire());
    assert!(poll_once(waiting.as_mut()).is_pending());
    assert_eq!(second_gates.steps(), 0, "it waits in the process's queue");
    drop(waiting);

    // The holder is untouched, and the queue has nobody left in it: the
    // next acquisition goes straight through once the lock is released.
    assert!(block_on(held.refresh()).unwrap());
    assert_eq!(block_on(held.release()).unwrap(), Released::Released);
    let mut next = pin!(second.acquire());
    let Poll::Ready(Ok(next)) = poll_once(next.as_mut()) else {
        panic!("a dropped waiter kept its place in the process's queue");
    };
    assert_eq!(block_on(next.release()).unwrap(), Released::Released);
}

#[test]
fn acquire_dropped_while_its_create_is_unanswered_releases_what_the_create_makes() {
    let clock = ManualClock::new();
    let shared = MemoryBackend::new("cancel/acquire-create");
    let (lock, gated) = gated_lock(&shared, &clock);
    gated.create.close();

    let mut acquiring = Box::pin(lock.acquire());
    assert!(poll_once(acquiring.as_mut()).is_pending());
    drop(acquiring);

    // The create may still reach the backend: it runs to its end on the
    // runtime, and releases the lock it made. No heartbeat is started.
    let mut handed_over = clock.take_spawned();
    assert_eq!(handed_over.len(), 1, "the create was handed to the runtime");
    gated.create.open();
    finish(handed_over.pop().unwrap());
    assert_eq!(holder(&shared), None, "nobody holds a lock nobody has");
    assert_eq!(gated.release.arrived(), 1, "released once it was made");
    clock.advance(STALE);
    assert!(clock.take_spawned().is_empty(), "no heartbeat");
}

#[test]
fn acquire_dropped_while_looking_at_a_busy_lock_leaves_no_trace() {
    let clock = ManualClock::new();
    let shared = MemoryBackend::new("cancel/acquire-inspect");
    let (holding, _) = gated_lock(&shared, &clock);
    let held = block_on(holding.acquire()).unwrap();
    let (waiter, gated) = gated_lock(&shared, &clock);
    gated.inspect.close();

    let mut acquiring = Box::pin(waiter.acquire());
    assert!(poll_once(acquiring.as_mut()).is_pending());
    assert_eq!(gated.inspect.arrived(), 1, "busy: it looks");
    drop(acquiring);

    assert!(clock.take_spawned().is_empty(), "a look is simply dropped");
    assert_eq!(holder(&shared).as_ref(), Some(held.owner()));
    assert!(
        block_on(held.refresh()).unwrap(),
        "the holder's lock is intact"
    );
}

#[test]
fn acquire_dropped_while_breaking_a_stale_lock_lets_the_break_finish() {
    let clock = ManualClock::new();
    let shared = MemoryBackend::new("cancel/acquire-break");
    let dead = LockRecord::for_this_process(clock.now() - Duration::from_secs(3600));
    shared.replace(Holder::Record(dead.clone()), dead.acquired_at);
    let (lock, gated) = gated_lock(&shared, &clock);
    gated.brk.close();

    let mut acquiring = Box::pin(lock.acquire());
    assert!(poll_once(acquiring.as_mut()).is_pending());
    assert_eq!(gated.brk.arrived(), 1, "judged stale: it breaks");
    drop(acquiring);

    // A break stopped half-way could leave a marker or trash behind (the
    // file backend): it runs to its end, and creates nothing after it.
    let mut handed_over = clock.take_spawned();
    assert_eq!(handed_over.len(), 1, "the break was handed to the runtime");
    gated.brk.open();
    finish(handed_over.pop().unwrap());
    assert_eq!(holder(&shared), None, "broken, and not taken");
    assert_eq!(gated.create.arrived(), 1, "only the first try created");
}

#[test]
fn acquire_dropped_while_waiting_for_a_busy_lock_leaves_no_trace() {
    let clock = ManualClock::new();
    let shared = MemoryBackend::new("cancel/acquire-sleep");
    let (holding, _) = gated_lock(&shared, &clock);
    let held = block_on(holding.acquire()).unwrap();
    let (waiter, gated) = gated_lock(&shared, &clock);

    let mut acquiring = Box::pin(waiter.acquire());
    assert!(
        poll_once(acquiring.as_mut()).is_pending(),
        "busy: it sleeps"
    );
    let steps = gated.steps();
    drop(acquiring);

    clock.advance(MAX_WAIT);
    assert_eq!(gated.steps(), steps, "nothing more is done");
    let spawned = clock.take_spawned();
    assert_eq!(spawned.len(), 1, "only the holder's heartbeat");
    drop(spawned);
    assert_eq!(holder(&shared).as_ref(), Some(held.owner()));
    assert_eq!(block_on(held.release()).unwrap(), Released::Released);
}

// ---- release ----------------------------------------------------------------

#[test]
fn release_dropped_before_its_first_poll_releases_as_dropping_the_guard_does() {
    let clock = ManualClock::new();
    let shared = MemoryBackend::new("cancel/release-unpolled");
    let (lock, gated) = gated_lock(&shared, &clock);
    let held = block_on(lock.acquire()).unwrap();
    drop(held.release());
    assert_eq!(holder(&shared), None, "released on drop, synchronously");
    assert_eq!(gated.release.arrived(), 0, "not through the async release");
}

#[test]
fn release_dropped_while_the_backend_releases_stops_the_heartbeat() {
    let clock = ManualClock::new();
    let shared = MemoryBackend::new("cancel/release-unanswered");
    let (lock, gated) = gated_lock(&shared, &clock);
    let held: HeldLock = block_on(lock.acquire()).unwrap();
    let owner = held.owner().clone();
    gated.release.close();

    let mut releasing = Box::pin(held.release());
    assert!(poll_once(releasing.as_mut()).is_pending());
    drop(releasing);

    // Not released (the step never answered), and never released twice:
    // the guard's own drop does nothing more. The heartbeat has stopped,
    // so the lock goes stale and a peer breaks it after `stale`.
    assert_eq!(holder(&shared), Some(owner));
    clock.advance(HEARTBEAT * 2);
    assert!(clock.take_spawned().is_empty(), "no heartbeat");
    assert_eq!(gated.refresh.arrived(), 0, "nothing refreshes it");
    let (peer, _) = gated_lock(&shared, &clock);
    let mut trying = pin!(peer.try_acquire());
    assert!(matches!(poll_once(trying.as_mut()), Poll::Ready(Ok(None))));
    clock.advance(STALE - HEARTBEAT * 2 + MS);
    let taken = block_on(peer.try_acquire()).unwrap().expect("stale by now");
    assert_eq!(holder(&shared).as_ref(), Some(taken.owner()));
    drop(taken);
}

#[test]
fn release_dropped_after_the_backend_released_leaves_the_lock_released() {
    let clock = ManualClock::new();
    let shared = MemoryBackend::new("cancel/release-done");
    let (lock, _) = gated_lock(&shared, &clock);
    let held = block_on(lock.acquire()).unwrap();
    clock.advance(HEARTBEAT);
    let mut heartbeat = clock.take_spawned().pop().expect("the first beat");
    assert!(
        poll_once(heartbeat.as_mut()).is_pending(),
        "it beats, sleeps"
    );

    // With a heartbeat task running, release yields once after the
    // backend's release, to let that task end: dropped there.
    let mut releasing = Box::pin(held.release());
    assert!(poll_once(releasing.as_mut()).is_pending());
    drop(releasing);
    assert_eq!(holder(&shared), None);
    assert!(
        poll_once(heartbeat.as_mut()).is_ready(),
        "the heartbeat ended"
    );
}

// ---- refresh ----------------------------------------------------------------

#[test]
fn refresh_dropped_at_any_point_changes_nothing() {
    let clock = ManualClock::new();
    let shared = MemoryBackend::new("cancel/refresh");
    let (lock, gated) = gated_lock(&shared, &clock);
    let held = block_on(lock.acquire()).unwrap();

    drop(held.refresh());
    assert_eq!(gated.refresh.arrived(), 0, "unpolled: no step");

    gated.refresh.close();
    let mut refreshing = Box::pin(held.refresh());
    assert!(poll_once(refreshing.as_mut()).is_pending());
    drop(refreshing);
    gated.refresh.open();

    // Still held, not lost, its heartbeat armed: the next refresh and the
    // release behave as if nothing had happened.
    assert!(!held.is_lost());
    assert!(block_on(held.refresh()).unwrap());
    clock.advance(HEARTBEAT);
    let mut heartbeat = clock.take_spawned().pop().expect("the first beat");
    assert!(poll_once(heartbeat.as_mut()).is_pending());
    assert_eq!(gated.refresh.arrived(), 3, "the heartbeat refreshed");
    assert_eq!(block_on(held.release()).unwrap(), Released::Released);
    assert!(poll_once(heartbeat.as_mut()).is_ready());
}
