//! Virtual time for the core: [`SimClock`] (the world's clocks) and
//! [`SimRuntime`] (one process's view: its own, possibly skewed, wall clock,
//! and a spawner that tags tasks with the process).

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use heldlock_core::{Clock, Sleep, Spawn};

use crate::world::{Spawned, World};

/// The world's virtual clocks: a monotonic time that only the scheduler
/// moves, and the true wall time derived from it. Sleeps complete only when
/// the scheduler advances time past them.
#[derive(Clone)]
pub struct SimClock {
    world: Arc<World>,
}

impl SimClock {
    pub(crate) fn new(world: Arc<World>) -> Self {
        SimClock { world }
    }

    /// Virtual time since the start of the run.
    pub fn elapsed(&self) -> Duration {
        self.world.lock().now
    }

    /// True wall time (what a perfectly synchronised host would read).
    pub fn true_wall(&self) -> SystemTime {
        self.world.lock().true_wall()
    }
}

impl fmt::Debug for SimClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimClock")
            .field("elapsed", &self.elapsed())
            .finish()
    }
}

impl Clock for SimClock {
    fn now(&self) -> SystemTime {
        self.true_wall()
    }

    fn instant(&self) -> Instant {
        self.world.lock().instant()
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        Box::pin(self.world.sleep(duration))
    }
}

/// One simulated process's runtime: its wall clock (true time plus the
/// process's offset, which the fault plan may step forwards or backwards),
/// the shared monotonic clock, and a spawner that puts tasks (the
/// heartbeat) into the simulator's executor tagged with the process, so that
/// crashing the process also kills them.
#[derive(Clone)]
pub struct SimRuntime {
    world: Arc<World>,
    contender: usize,
    jitter_seed: u64,
}

impl SimRuntime {
    pub(crate) fn new(world: Arc<World>, contender: usize, jitter_seed: u64) -> Self {
        SimRuntime {
            world,
            contender,
            jitter_seed,
        }
    }

    /// The process this runtime belongs to.
    pub fn contender(&self) -> usize {
        self.contender
    }

    /// This process's wall clock minus true time.
    pub fn offset(&self) -> (bool, Duration) {
        let ns = self
            .world
            .lock()
            .procs
            .get(self.contender)
            .map_or(0, |p| p.offset_ns);
        (ns < 0, Duration::from_nanos(ns.unsigned_abs()))
    }

    /// Steps this process's wall clock by `delta_ns` nanoseconds (negative:
    /// backwards), as an NTP step would. The monotonic clock does not move.
    pub fn step_wall(&self, delta_ns: i64) {
        if let Some(proc) = self.world.lock().procs.get_mut(self.contender) {
            proc.offset_ns = proc.offset_ns.saturating_add(delta_ns);
        }
    }
}

impl fmt::Debug for SimRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimRuntime")
            .field("contender", &self.contender)
            .field("offset", &self.offset())
            .finish()
    }
}

impl Clock for SimRuntime {
    fn now(&self) -> SystemTime {
        self.world.lock().wall(Some(self.contender))
    }

    fn instant(&self) -> Instant {
        self.world.lock().instant()
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        Box::pin(self.world.sleep(duration))
    }

    /// Derived from the run's seed and the process, so the backoff jitter of
    /// a run is replayed exactly.
    fn jitter_seed(&self) -> u64 {
        self.jitter_seed
    }
}

impl Spawn for SimRuntime {
    fn spawn(&self, task: Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>>) {
        let mut world = self.world.lock();
        if world.procs.get(self.contender).is_some_and(|p| p.crashed) {
            // A dead process runs nothing: the steps its crash interrupted
            // (which the core hands to the runtime when their caller is
            // dropped) die with it. Dropped with no lock held.
            drop(world);
            drop(task);
            return;
        }
        world.spawned.push(Spawned {
            contender: Some(self.contender),
            label: "heartbeat",
            future: task,
        });
    }
}
