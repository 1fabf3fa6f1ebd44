//! Panics in a runtime's code while a lock is being taken: whatever the
//! acquisition created is released as the panic unwinds, never left to go
//! stale with nobody holding it.
#![allow(clippy::unwrap_used)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use heldlock_core::{
    Clock, Inspection, Lock, LockBackend, LockOptions, ManualClock, MemoryBackend, Sleep, Spawn,
};

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
