//! heldlock's clock and spawner on smol.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime};

use heldlock_core::{Clock, Sleep, Spawn};

/// smol as heldlock's [`Clock`] and [`Spawn`]er: `smol::Timer` for sleeps and
/// smol's global executor for the heartbeat.
///
/// # Examples
///
/// ```
/// use heldlock_core::Clock;
///
/// smol::block_on(async {
///     let clock = heldlock_smol::SmolRuntime::new();
///     let before = clock.instant();
///     clock.sleep(std::time::Duration::from_millis(1)).await;
///     assert!(clock.instant() > before);
/// });
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct SmolRuntime;

impl SmolRuntime {
    /// smol's global executor and timers (nothing to configure).
    pub fn new() -> Self {
        SmolRuntime
    }
}

impl Clock for SmolRuntime {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn instant(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        let timer = smol::Timer::after(duration);
        Box::pin(async move {
            timer.await;
        })
    }
}

impl Spawn for SmolRuntime {
    fn spawn(&self, task: Pin<Box<dyn Future<Output = ()> + Send + 'static>>) {
        // Detached: the heartbeat stops by itself when its lock is released.
        smol::spawn(task).detach();
    }
}
