//! Time, as the core sees it: supplied by the runtime adapter.

use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

/// A boxed future that sleeps; returned by [`Clock::sleep`].
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A source of time for the lock machines, supplied by a runtime adapter.
///
/// Two clocks, for two jobs: the wall clock (`now`) is compared with the
/// stamps that other processes write, and the monotonic clock (`instant`)
/// measures deadlines and how long an observation stayed unchanged, which no
/// clock step can fool.
///
/// The tokio adapter reads tokio's time, so paused-time tests work; the
/// simulator runs on virtual time; [`ManualClock`] is for unit tests.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The wall-clock time.
    fn now(&self) -> SystemTime;
    /// A monotonic instant.
    fn instant(&self) -> Instant;
    /// A future that completes after `duration` of this clock's monotonic time.
    fn sleep(&self, duration: Duration) -> Sleep;

    /// A seed for the jitter of backoff sleeps. Random by default, so that
    /// waiters of different processes spread out; a simulator returns a value
    /// derived from its run's seed, so that a run can be replayed.
    fn jitter_seed(&self) -> u64 {
        RandomState::new().hash_one(0_u8)
    }
}

/// Spawns the background tasks of a held lock (its heartbeat).
pub trait Spawn: Send + Sync + fmt::Debug + 'static {
    /// Runs `task` to completion in the background.
    fn spawn(&self, task: Pin<Box<dyn Future<Output = ()> + Send + 'static>>);
}

/// What a runtime adapter gives the core: time and a way to spawn.
pub trait Runtime: Clock + Spawn {}

impl<T: Clock + Spawn> Runtime for T {}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> SystemTime {
        (**self).now()
    }
    fn instant(&self) -> Instant {
        (**self).instant()
    }
    fn sleep(&self, duration: Duration) -> Sleep {
        (**self).sleep(duration)
    }
    fn jitter_seed(&self) -> u64 {
        (**self).jitter_seed()
    }
}

/// A clock that moves only when told to: for tests of the lock machines.
///
/// Sleeps complete when [`advance`](ManualClock::advance) moves the clock past
/// their deadline. Its spawner runs nothing by itself: spawned tasks are kept
/// until [`take_spawned`](ManualClock::take_spawned).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use heldlock_core::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// let start = clock.instant();
/// clock.advance(Duration::from_secs(2));
/// assert_eq!(clock.instant() - start, Duration::from_secs(2));
/// ```
#[derive(Clone)]
pub struct ManualClock {
    inner: Arc<Mutex<ManualInner>>,
}

struct ManualInner {
    wall: SystemTime,
    mono: Instant,
    sleepers: Vec<(Instant, Waker)>,
    spawned: Vec<Pin<Box<dyn Future<Output = ()> + Send + 'static>>>,
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner();
        f.debug_struct("ManualClock")
            .field("wall", &inner.wall)
            .field("sleepers", &inner.sleepers.len())
            .field("spawned", &inner.spawned.len())
            .finish()
    }
}

impl ManualClock {
    /// A clock at the current wall time, which then stands still.
    pub fn new() -> Self {
        ManualClock {
            inner: Arc::new(Mutex::new(ManualInner {
                wall: SystemTime::now(),
                mono: Instant::now(),
                sleepers: Vec::new(),
                spawned: Vec::new(),
            })),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, ManualInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves both clocks forward and wakes the sleepers that are due.
    pub fn advance(&self, by: Duration) {
        let due: Vec<Waker> = {
            let mut inner = self.inner();
            inner.wall += by;
            inner.mono += by;
            let now = inner.mono;
            let (due, rest) = inner.sleepers.drain(..).partition(|(at, _)| *at <= now);
            inner.sleepers = rest;
            due.into_iter().map(|(_, waker)| waker).collect()
        };
        due.into_iter().for_each(Waker::wake);
    }

    /// Steps the wall clock alone (forwards or backwards), as an NTP step or a
    /// skewed host would; the monotonic clock does not move.
    pub fn step_wall(&self, to: SystemTime) {
        self.inner().wall = to;
    }

    /// The tasks spawned so far, to be run by the test.
    pub fn take_spawned(&self) -> Vec<Pin<Box<dyn Future<Output = ()> + Send + 'static>>> {
        std::mem::take(&mut self.inner().spawned)
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        self.inner().wall
    }

    fn instant(&self) -> Instant {
        self.inner().mono
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        let until = self.instant() + duration;
        let clock = self.clone();
        Box::pin(std::future::poll_fn(move |cx: &mut Context<'_>| {
            let mut inner = clock.inner();
            if inner.mono >= until {
                Poll::Ready(())
            } else {
                inner.sleepers.push((until, cx.waker().clone()));
                Poll::Pending
            }
        }))
    }
}

impl Spawn for ManualClock {
    fn spawn(&self, task: Pin<Box<dyn Future<Output = ()> + Send + 'static>>) {
        self.inner().spawned.push(task);
    }
}
