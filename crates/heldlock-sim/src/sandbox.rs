//! [`SimWorld`]: the simulator's parts for scenarios of your own — a
//! simulated file system, virtual time, per-process runtimes and a seeded
//! scheduler — without the built-in contenders and checker.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use crate::executor::Executor;
use crate::fs::SimFs;
use crate::rng::SplitMix64;
use crate::runtime::{SimClock, SimRuntime};
use crate::tape::Decisions;
use crate::world::World;

/// A simulated world: one [`SimFs`], virtual time, `processes` simulated
/// processes, and a seeded scheduler that interleaves the tasks you spawn
/// at every file-system operation and every sleep.
///
/// # Examples
///
/// Two processes take a real `heldlock_core::Lock` over a real
/// `heldlock_fs::FsBackend` on the simulated file system:
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// use heldlock_core::{Lock, LockOptions};
/// use heldlock_fs::FsBackend;
/// use heldlock_sim::SimWorld;
///
/// let mut world = SimWorld::new(7, 2);
/// for process in 0..2 {
///     let backend = FsBackend::with_vfs("/locks/db.lock", world.fs()).unwrap();
///     let runtime = Arc::new(world.runtime(process));
///     let lock = Lock::new(Arc::new(backend), runtime.clone(), LockOptions::new(Duration::from_secs(1))).unwrap();
///     world.spawn(Some(process), async move {
///         let held = lock.acquire().await.unwrap();
///         assert!(held.refresh().await.unwrap());
///         held.release().await.unwrap();
///     });
/// }
/// let steps = world.run(100_000).unwrap();
/// assert!(steps > 0);
/// ```
pub struct SimWorld {
    world: Arc<World>,
    exec: Executor,
    rng: SplitMix64,
}

/// [`SimWorld::run`] stopped with tasks left: nothing could run any more (a
/// lost wake-up), or the step limit was reached.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{tasks} task(s) left after {steps} steps: {why}")]
pub struct Stuck {
    /// Steps taken.
    pub steps: u64,
    /// Tasks left.
    pub tasks: usize,
    /// `"nothing can run"` or `"step limit"`.
    pub why: &'static str,
}

impl SimWorld {
    /// A world of `processes` processes whose schedule `seed` decides.
    pub fn new(seed: u64, processes: usize) -> Self {
        let decisions = Decisions::seeded(SplitMix64::new(seed), false);
        SimWorld {
            world: World::new(decisions, processes, PathBuf::from("/"), false),
            exec: Executor::new(),
            rng: SplitMix64::new(seed ^ 0x5A4D_B0C5),
        }
    }

    /// The file system (every clone is the same file system).
    pub fn fs(&self) -> SimFs {
        SimFs::new(Arc::clone(&self.world))
    }

    /// The world's virtual clocks.
    pub fn clock(&self) -> SimClock {
        SimClock::new(Arc::clone(&self.world))
    }

    /// The runtime of process `process`: its own wall clock (see
    /// [`SimRuntime::step_wall`]), and a spawner whose tasks belong to it.
    pub fn runtime(&self, process: usize) -> SimRuntime {
        SimRuntime::new(Arc::clone(&self.world), process, process as u64)
    }

    /// Adds a task, belonging to `process` (or to none).
    pub fn spawn(
        &mut self,
        process: Option<usize>,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        self.exec.spawn(process, "task", Box::pin(task));
    }

    /// Crashes `process`: its tasks are dropped where they stand.
    pub fn crash(&mut self, process: usize) {
        if let Some(proc) = self.world.lock().procs.get_mut(process) {
            proc.crashed = true;
        }
        drop(self.exec.kill(process));
    }

    /// Runs until every task has finished: at each step a seeded choice
    /// among the runnable tasks; when none can run, virtual time jumps to
    /// the next timer. Returns the steps taken.
    ///
    /// # Errors
    ///
    /// [`Stuck`] if tasks remain that nothing will ever wake, or after
    /// `step_limit` steps.
    pub fn run(&mut self, step_limit: u64) -> Result<u64, Stuck> {
        let mut steps = 0;
        loop {
            for _ in self.exec.adopt_spawned(&self.world) {}
            let runnable = self.exec.runnable(|_| true);
            if runnable.is_empty() {
                if self.exec.is_empty() {
                    return Ok(steps);
                }
                let next = self.world.lock().next_timer();
                match next {
                    Some(at) => {
                        self.world.advance_to(at);
                        continue;
                    }
                    None => {
                        return Err(Stuck {
                            steps,
                            tasks: self.exec.ids().len(),
                            why: "nothing can run",
                        });
                    }
                }
            }
            if steps >= step_limit {
                return Err(Stuck {
                    steps,
                    tasks: self.exec.ids().len(),
                    why: "step limit",
                });
            }
            steps += 1;
            self.world.lock().step = steps;
            let pick = runnable[self.rng.below(runnable.len() as u64) as usize];
            self.exec.poll(pick, &self.world);
        }
    }
}

impl Drop for SimWorld {
    fn drop(&mut self) {
        // Tasks hold the world; drop them first (with no lock held).
        self.exec.clear();
        let spawned = std::mem::take(&mut self.world.lock().spawned);
        drop(spawned);
    }
}

impl fmt::Debug for SimWorld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimWorld")
            .field("world", &self.world)
            .field("tasks", &self.exec.ids().len())
            .finish()
    }
}
