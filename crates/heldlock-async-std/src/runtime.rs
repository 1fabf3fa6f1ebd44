//! heldlock's clock and spawner on async-std.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime};

use heldlock_core::{Clock, Sleep, Spawn};

/// The async-std runtime as heldlock's [`Clock`] and [`Spawn`]er.
///
/// # Examples
///
/// ```
/// use heldlock_core::Clock;
///
/// # async_std::task::block_on(async {
/// let clock = heldlock_async_std::AsyncStdRuntime::new();
/// let before = clock.instant();
/// clock.sleep(std::time::Duration::from_millis(1)).await;
/// assert!(clock.instant() > before);
/// # });
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct AsyncStdRuntime;

impl AsyncStdRuntime {
    /// The async-std runtime (global; nothing to configure).
    pub fn new() -> Self {
        AsyncStdRuntime
    }
}

impl Clock for AsyncStdRuntime {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn instant(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        Box::pin(async_std::task::sleep(duration))
    }
}

impl Spawn for AsyncStdRuntime {
    fn spawn(&self, task: Pin<Box<dyn Future<Output = ()> + Send + 'static>>) {
        // Detached: the heartbeat stops by itself when its lock is released.
        drop(async_std::task::spawn(task));
    }
}
