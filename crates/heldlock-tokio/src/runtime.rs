//! heldlock's clock and spawner on tokio.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime};

use heldlock_core::{Clock, Sleep, Spawn};

/// The tokio runtime as heldlock's [`Clock`] and [`Spawn`]er.
///
/// Monotonic time and sleeps are tokio's, so tests under
/// `tokio::time::pause()` run on paused time; the wall clock is the system's.
/// Spawning needs a tokio runtime context, which any `.await` on tokio has.
///
/// # Examples
///
/// ```
/// use heldlock_core::Clock;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let clock = heldlock_tokio::TokioRuntime::new();
/// let before = clock.instant();
/// clock.sleep(std::time::Duration::from_millis(1)).await;
/// assert!(clock.instant() > before);
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioRuntime;

impl TokioRuntime {
    /// The tokio runtime the caller runs on.
    pub fn new() -> Self {
        TokioRuntime
    }
}

impl Clock for TokioRuntime {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn instant(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(duration))
    }
}

impl Spawn for TokioRuntime {
    fn spawn(&self, task: Pin<Box<dyn Future<Output = ()> + Send + 'static>>) {
        // The heartbeat stops by itself when its lock is released or dropped.
        drop(tokio::spawn(task));
    }
}
