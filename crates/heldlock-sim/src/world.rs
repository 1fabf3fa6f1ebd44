//! The shared state of one simulated world: virtual time, the file system,
//! the decision source, the processes (contenders) and what the checker has
//! observed. One mutex guards it all; nothing awaits while holding it.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::check::Observer;
use crate::fs::tree::{Actor, Tree};
use crate::hosts::{Flock, HostModel};
use crate::tape::Decisions;
use crate::trace::Trace;

/// A task's future, as the executor keeps it.
pub(crate) type TaskFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The wall-clock time at which every simulation starts (2025-06-15).
pub(crate) const WALL_START: Duration = Duration::from_secs(1_750_000_000);

/// Which task is being polled.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Current {
    pub(crate) task: u64,
    pub(crate) contender: Option<usize>,
}

/// One simulated process.
#[derive(Clone, Debug, Default)]
pub(crate) struct Proc {
    /// Its wall clock minus true time, in nanoseconds.
    pub(crate) offset_ns: i64,
    /// Paused (not scheduled) until this virtual time.
    pub(crate) paused_until: Option<Duration>,
    pub(crate) crashed: bool,
    pub(crate) crashed_at: Option<Duration>,
    pub(crate) finished: bool,
    /// Every pause: (start, length).
    pub(crate) pauses: Vec<(Duration, Duration)>,
}

/// A task spawned during a poll, waiting to join the executor.
pub(crate) struct Spawned {
    pub(crate) contender: Option<usize>,
    pub(crate) label: &'static str,
    pub(crate) future: TaskFuture,
}

/// Everything one run shares; see the [module docs](self).
pub(crate) struct State {
    /// Virtual time since the start; both clocks are derived from it.
    pub(crate) now: Duration,
    base_instant: Instant,
    timers: BTreeMap<(Duration, u64), Waker>,
    timer_seq: u64,
    pub(crate) tree: Tree,
    pub(crate) decisions: Decisions,
    pub(crate) current: Option<Current>,
    pub(crate) procs: Vec<Proc>,
    pub(crate) spawned: Vec<Spawned>,
    /// Injected I/O errors per million contender file-system operations.
    pub(crate) io_ppm: u32,
    /// Only heartbeat tasks get injected I/O errors.
    pub(crate) io_heartbeat_only: bool,
    pub(crate) lock_path: PathBuf,
    pub(crate) lock_dir: PathBuf,
    /// How the hosts behave (one host unless `--hosts`).
    pub(crate) hosts: HostModel,
    /// The `flock`s taken, each on its host's kernel.
    pub(crate) flocks: Vec<Flock>,
    pub(crate) obs: Observer,
    pub(crate) trace: Trace,
    pub(crate) step: u64,
}

impl State {
    /// True wall time (the file server's clock).
    pub(crate) fn true_wall(&self) -> SystemTime {
        UNIX_EPOCH + WALL_START + self.now
    }

    /// The wall clock of `contender` (true time plus its offset).
    pub(crate) fn wall(&self, contender: Option<usize>) -> SystemTime {
        let offset = contender
            .and_then(|c| self.procs.get(c))
            .map_or(0, |p| p.offset_ns);
        let base = self.true_wall();
        let magnitude = Duration::from_nanos(offset.unsigned_abs());
        let shifted = if offset >= 0 {
            base.checked_add(magnitude)
        } else {
            base.checked_sub(magnitude)
        };
        shifted.unwrap_or(base)
    }

    pub(crate) fn instant(&self) -> Instant {
        self.base_instant + self.now
    }

    /// Who the task being polled acts for.
    pub(crate) fn actor(&self) -> Actor {
        match self.current {
            Some(Current {
                contender: Some(c), ..
            }) => Actor::Contender(c),
            _ => Actor::Setup,
        }
    }

    /// The earliest pending timer.
    pub(crate) fn next_timer(&self) -> Option<Duration> {
        self.timers.keys().next().map(|(at, _)| *at)
    }

    /// The earliest end of a pause.
    pub(crate) fn next_unpause(&self) -> Option<Duration> {
        self.procs
            .iter()
            .filter(|p| !p.crashed)
            .filter_map(|p| p.paused_until)
            .min()
    }

    /// Moves time to `to` (never backwards), ends pauses that are over, and
    /// returns the wakers of the timers that are due (to be woken once the
    /// lock is released).
    pub(crate) fn advance_to(&mut self, to: Duration) -> Vec<Waker> {
        if to > self.now {
            self.now = to;
        }
        let now = self.now;
        for proc in &mut self.procs {
            if proc.paused_until.is_some_and(|until| until <= now) {
                proc.paused_until = None;
            }
        }
        let mut due = Vec::new();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
        due
    }

    pub(crate) fn is_paused(&self, contender: usize) -> bool {
        self.procs
            .get(contender)
            .is_some_and(|p| p.paused_until.is_some())
    }

    /// Writes a line to the trace as the current task.
    pub(crate) fn note(&mut self, what: &str) {
        if !self.trace.enabled() {
            return;
        }
        let who = match self.current {
            Some(Current {
                contender: Some(c),
                task,
            }) => format!(
                "c{c}{}",
                if self.obs.is_heartbeat(task) {
                    "/hb"
                } else {
                    ""
                }
            ),
            Some(Current { task, .. }) => format!("t{task}"),
            None => "sim".to_owned(),
        };
        self.note_as(&who, what);
    }

    /// Writes a line to the trace on behalf of `who`.
    pub(crate) fn note_as(&mut self, who: &str, what: &str) {
        let (step, now) = (self.step, self.now);
        let what = self.trace.scrub(what);
        self.trace.line(step, now, who, &what);
    }

    pub(crate) fn trace_path(&mut self, path: &Path) -> String {
        self.trace.path(path)
    }
}

/// The world of one run, shared by the file system, the runtimes, the
/// executor and the checker.
pub(crate) struct World {
    state: Mutex<State>,
}

impl World {
    pub(crate) fn new(
        decisions: Decisions,
        contenders: usize,
        lock_path: PathBuf,
        trace: bool,
    ) -> Arc<Self> {
        let lock_dir = lock_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let lock_name = lock_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let start = UNIX_EPOCH + WALL_START;
        Arc::new(World {
            state: Mutex::new(State {
                now: Duration::ZERO,
                base_instant: Instant::now(),
                timers: BTreeMap::new(),
                timer_seq: 0,
                tree: Tree::new(start),
                decisions,
                current: None,
                procs: vec![Proc::default(); contenders],
                spawned: Vec::new(),
                io_ppm: 0,
                io_heartbeat_only: false,
                lock_path,
                lock_dir,
                hosts: HostModel::default(),
                flocks: Vec::new(),
                obs: Observer::new(contenders),
                trace: Trace::new(trace, lock_name),
                step: 0,
            }),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held can only come from a bug in the
        // simulator itself; the state is still the best evidence there is.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves time to `to` and wakes the timers that are due.
    pub(crate) fn advance_to(&self, to: Duration) {
        let due = self.lock().advance_to(to);
        due.into_iter().for_each(Waker::wake);
    }

    /// A scheduling point: the calling task gives way once, so that the
    /// scheduler can run anybody (itself included) before it goes on.
    pub(crate) fn yield_now(&self) -> YieldNow {
        YieldNow { yielded: false }
    }

    /// A future that completes once virtual time reaches `now + duration`.
    pub(crate) fn sleep(self: &Arc<Self>, duration: Duration) -> SimSleep {
        let deadline = self.lock().now.saturating_add(duration);
        SimSleep {
            world: Arc::clone(self),
            deadline,
            key: None,
            polled: false,
        }
    }
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("World")
            .field("now", &state.now)
            .field("step", &state.step)
            .finish_non_exhaustive()
    }
}

/// See [`World::yield_now`].
#[derive(Debug)]
pub(crate) struct YieldNow {
    yielded: bool,
}

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            Poll::Ready(())
        } else {
            self.yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

/// A virtual-time sleep; see [`World::sleep`]. Always a scheduling point,
/// even when it is already due.
pub(crate) struct SimSleep {
    world: Arc<World>,
    deadline: Duration,
    key: Option<(Duration, u64)>,
    polled: bool,
}

impl Future for SimSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let mut state = this.world.lock();
        let due = state.now >= this.deadline;
        if !this.polled {
            this.polled = true;
            if due {
                drop(state);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        if due {
            if let Some(key) = this.key.take() {
                state.timers.remove(&key);
            }
            return Poll::Ready(());
        }
        let key = *this.key.get_or_insert_with(|| {
            state.timer_seq += 1;
            (this.deadline, state.timer_seq)
        });
        state.timers.insert(key, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for SimSleep {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.world.lock().timers.remove(&key);
        }
    }
}
