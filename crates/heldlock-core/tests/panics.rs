//! Panics while a lock is being taken, in a runtime's code or in the
//! caller's: whatever the acquisition created is released, never left to go
//! stale with nobody holding it.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use heldlock_core::{
    BackendError, Clock, Created, Inspection, Lock, LockBackend, LockOptions, LockRecord,
    ManualClock, MemoryBackend, Sleep, Spawn,
};

mod support;

use support::hooked::{Hooked, Hooks};

/// A runtime whose timers cannot be made, as tokio's outside a runtime or
/// with its time driver off: `sleep` panics.
#[derive(Debug, Default)]
struct NoTimers(ManualClock);

impl Clock for NoTimers {
    fn now(&self) -> SystemTime {
        self.0.now()
    }
    fn instant(&self) -> Instant {
        self.0.instant()
    }
    fn sleep(&self, _: Duration) -> Sleep {
        panic!("timers are disabled on this runtime");
    }
}

impl Spawn for NoTimers {
    fn spawn(&self, task: Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>>) {
        self.0.spawn(task);
    }
}

#[test]
fn a_runtime_that_cannot_arm_the_heartbeat_leaves_no_lock_behind() {
    let backend = Arc::new(MemoryBackend::new("no-timers"));
    let lock = Lock::new(
        Arc::clone(&backend) as Arc<dyn LockBackend>,
        Arc::new(NoTimers::default()),
        LockOptions::new(Duration::from_secs(30)),
    )
    .unwrap();
    // Uncontended, the create is the first step and needs no timer; the
    // heartbeat's first beat is the first timer asked for.
    let acquired = catch_unwind(AssertUnwindSafe(|| {
        futures::executor::block_on(lock.acquire())
    }));
    assert!(acquired.is_err(), "the runtime's panic reaches the caller");
    let after = futures::executor::block_on(backend.inspect()).unwrap();
    assert!(
        matches!(after, Inspection::Absent),
        "the lock created before the panic was left behind: {after:?}"
    );
}

/// A create that is done in the backend but whose answer waits until
/// `answer` is set: a step dropped there was done (the trait allows it).
#[derive(Debug, Default)]
struct CreatesThenStalls {
    answer: Arc<AtomicBool>,
}

#[async_trait]
impl Hooks for CreatesThenStalls {
    async fn try_create(
        &self,
        inner: &dyn LockBackend,
        record: &LockRecord,
    ) -> Result<Created, BackendError> {
        let created = inner.try_create(record).await;
        let answer = Arc::clone(&self.answer);
        std::future::poll_fn(move |_| {
            if answer.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        created
    }
}

#[test]
fn a_create_in_flight_when_a_panic_drops_acquire_is_still_released() {
    let clock = ManualClock::new();
    let shared = MemoryBackend::new("panicking-caller");
    let hooks = CreatesThenStalls::default();
    let answer = Arc::clone(&hooks.answer);
    let lock = Lock::new(
        Arc::new(Hooked::new(shared.clone(), hooks)),
        Arc::new(clock.clone()),
        LockOptions::new(Duration::from_secs(30)),
    )
    .unwrap();
    let mut acquiring = Box::pin(lock.acquire());
    let polled = acquiring
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()));
    assert!(polled.is_pending(), "the create's answer is still to come");
    // The caller's code panics (a `select!` branch, a `join!` sibling) and
    // the acquisition is dropped as the panic leaves its scope.
    let unwound = catch_unwind(AssertUnwindSafe(move || {
        let _acquiring = acquiring;
        panic!("the caller panicked on purpose");
    }));
    assert!(unwound.is_err());
    let handed = clock.take_spawned();
    assert_eq!(handed.len(), 1, "the create was not handed to the runtime");
    answer.store(true, Ordering::SeqCst);
    for mut task in handed {
        let done = task.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        assert!(
            done.is_ready(),
            "the handed-over create must finish by itself"
        );
    }
    let after = futures::executor::block_on(shared.inspect()).unwrap();
    assert!(
        matches!(after, Inspection::Absent),
        "the lock created while the caller panicked was left behind: {after:?}"
    );
}
