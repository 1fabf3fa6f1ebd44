//! One seeded run: the world, the contenders, the scheduling loop, the
//! faults, and the report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use heldlock_core::{Lock, LockOptions, LockRecord, OwnerId};
use heldlock_fs::FsBackend;

use crate::check::{Class, Counters, Limits, Violation};
use crate::config::{Profile, Sched, SimConfig, allowance, default_heartbeat, random_offset};
use crate::contender::contender;
use crate::executor::Executor;
use crate::fs::{Actor, SimFs};
use crate::hosts::SimHost;
use crate::probe::Probe;
use crate::rng::SplitMix64;
use crate::runtime::SimRuntime;
use crate::tape::{Decisions, Tape};
use crate::world::{State, World};

/// The lock file every contender contends for.
pub const LOCK_PATH: &str = "/srv/app/locks/db.lock";

/// How to run one seed.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Record a readable trace of every step (slower).
    pub trace: bool,
    /// Record the tape of decisions (for shrinking).
    pub record: bool,
    /// Replay this tape instead of drawing decisions from the seed (the
    /// seed still decides the scenario).
    pub replay: Option<Tape>,
}

/// What one run did and found.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// The scenario the seed drew, in words.
    pub profile: String,
    /// Scheduling steps taken.
    pub steps: u64,
    /// Virtual time at the end.
    pub elapsed: Duration,
    /// Every finding, classified, in step order.
    pub violations: Vec<Violation>,
    /// What the run exercised (faults, outcomes), by name.
    pub counters: Counters,
    /// The trace, if asked for.
    pub trace: Vec<String>,
    /// The decisions, if recorded or replayed.
    pub tape: Option<Tape>,
}

impl RunReport {
    /// The findings of class [`Class::Real`].
    pub fn real(&self) -> impl Iterator<Item = &Violation> {
        self.violations.iter().filter(|v| v.class == Class::Real)
    }

    /// The findings of class [`Class::KnownRace`].
    pub fn known(&self) -> impl Iterator<Item = &Violation> {
        self.violations
            .iter()
            .filter(|v| v.class == Class::KnownRace)
    }

    /// Whether the run found a real violation.
    pub fn failed(&self) -> bool {
        self.real().next().is_some()
    }

    /// The first finding of class `class`.
    pub fn first(&self, class: Class) -> Option<&Violation> {
        self.violations.iter().find(|v| v.class == class)
    }
}

/// Runs `seed` of `config`. Same seed and options, same run.
pub fn run(config: &SimConfig, seed: u64, options: &RunOptions) -> RunReport {
    Sim::new(config, seed, options).run()
}

/// Picks the next task (seeded mode only; a replayed tape picks directly).
struct Scheduler {
    sched: Sched,
    priority: BTreeMap<u64, u64>,
    rng: SplitMix64,
    changes: usize,
}

impl Scheduler {
    fn adopt(&mut self, task: u64) {
        let depth = match self.sched {
            Sched::Pct { depth, .. } => depth,
            Sched::Random => 0,
        };
        let priority = depth + 1 + self.rng.below(1 << 40);
        self.priority.insert(task, priority);
    }

    /// The index into `order` (which starts with the last task run, if it
    /// is runnable) of the task to run at `step`.
    fn pick(&mut self, order: &[u64], step: u64, last: Option<u64>, rng: &mut SplitMix64) -> u64 {
        match &self.sched {
            Sched::Random => rng.below(order.len() as u64),
            Sched::Pct {
                depth,
                change_points,
            } => {
                while self.changes < change_points.len() && change_points[self.changes] <= step {
                    let low = depth.saturating_sub(1 + self.changes as u64);
                    if let Some(task) = last {
                        self.priority.insert(task, low);
                    }
                    self.changes += 1;
                }
                let best = order.iter().enumerate().max_by_key(|(i, task)| {
                    (
                        self.priority.get(task).copied().unwrap_or(0),
                        usize::MAX - i,
                    )
                });
                best.map_or(0, |(i, _)| i as u64)
            }
        }
    }
}

struct Sim {
    config: SimConfig,
    profile: Profile,
    seed: u64,
    world: Arc<World>,
    exec: Executor,
    scheduler: Scheduler,
    last: Option<u64>,
    replaying: bool,
}

impl Sim {
    fn new(config: &SimConfig, seed: u64, options: &RunOptions) -> Self {
        let profile = Profile::derive(config, seed);
        let decisions = match &options.replay {
            Some(tape) => Decisions::replay(tape),
            None => Decisions::seeded(SplitMix64::new(seed), options.record),
        };
        let lock_path = PathBuf::from(LOCK_PATH);
        let world = World::new(decisions, config.contenders, lock_path, options.trace);
        let scheduler = Scheduler {
            sched: profile.sched.clone(),
            priority: BTreeMap::new(),
            rng: SplitMix64::new(seed.rotate_left(17) ^ 0x5043_5400),
            changes: 0,
        };
        Sim {
            config: config.clone(),
            profile,
            seed,
            world,
            exec: Executor::new(),
            scheduler,
            last: None,
            replaying: options.replay.is_some(),
        }
    }

    fn options(&self, id: usize) -> LockOptions {
        let world = Arc::downgrade(&self.world);
        let mut options = LockOptions::new(self.config.own_stale(id));
        if let Some(cap) = self.config.declared_stale_cap {
            options = options.max_declared_stale(cap);
        }
        options
            .poll(self.config.poll)
            .max_wait(self.config.max_wait)
            .max_clock_skew(self.profile.max_clock_skew)
            .wall_clock_rule(self.profile.wall_clock_rule)
            .on_warning(move |warning| {
                if let Some(world) = Weak::upgrade(&world) {
                    world.lock().note(&format!("warning: {}", warning.message));
                }
            })
    }

    fn set_up(&mut self) {
        let stale = self.config.stale;
        let heartbeat = self.profile.heartbeat;
        let extra = if self.profile.wall_clock_rule {
            self.profile.max_clock_skew * 2
        } else {
            self.config.poll
        };
        {
            let mut st = self.world.lock();
            let shortest = self.config.shortest_stale();
            st.obs.limits = Limits {
                long_pause: shortest.saturating_sub(default_heartbeat(shortest)),
                merge_gap: heartbeat,
                liveness: self
                    .config
                    .liveness_bound
                    .unwrap_or(stale + self.config.poll + extra + allowance(stale)),
                max_wait: self.config.max_wait,
                poll: self.config.poll,
            };
            st.io_ppm = self.profile.io_ppm;
            st.io_heartbeat_only = self.config.io_heartbeat_only;
            st.hosts = self.profile.hosts;
            // Several hosts: the processes of one host share its clock.
            for id in 0..st.procs.len() {
                let clock = if st.hosts.count > 1 {
                    st.host_of(id)
                } else {
                    id
                };
                st.procs[id].offset_ns = self.profile.offsets_ns.get(clock).copied().unwrap_or(0);
            }
            let now = st.true_wall();
            let dir = st.lock_dir.clone();
            let lock = st.lock_path.clone();
            if self.profile.dir_exists || self.profile.initial_lock {
                let _ = st.tree.create_dir_all(&dir, now, Actor::Setup);
            }
            if self.profile.initial_lock {
                plant_dead_lock(&mut st, &lock, now - stale * 10);
            }
            let summary = self.profile.to_string();
            st.note_as("sim", &format!("seed {}: {summary}", self.seed));
        }
        for id in 0..self.config.contenders {
            let fs = SimFs::new(Arc::clone(&self.world));
            let options = self.options(id);
            let timing = match options.validate() {
                Ok(timing) => timing,
                Err(error) => {
                    self.world
                        .lock()
                        .find_stuck(format!("invalid options: {error}"));
                    return;
                }
            };
            // What `FileLock` builds on a local file system.
            let backend = match FsBackend::with_vfs(LOCK_PATH, fs) {
                Ok(backend) => backend.with_lock_timing(&timing),
                Err(error) => {
                    self.world
                        .lock()
                        .find_stuck(format!("cannot build a backend: {error}"));
                    return;
                }
            };
            #[cfg(feature = "safeguard-switches")]
            let backend = backend.with_safeguards(self.config.safeguards);
            let probe = Probe::new(
                backend,
                Arc::clone(&self.world),
                id,
                self.config.break_unreadable,
            );
            let jitter_seed = self.seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let runtime = SimRuntime::new(Arc::clone(&self.world), id, jitter_seed);
            let host = Arc::new(SimHost::new(Arc::clone(&self.world), id));
            let lock = match Lock::new(Arc::new(probe), Arc::new(runtime), options) {
                Ok(lock) => lock.with_host_probe(host),
                Err(error) => {
                    self.world
                        .lock()
                        .find_stuck(format!("invalid options: {error}"));
                    return;
                }
            };
            let plan = self.profile.plans[id].clone();
            let future = contender(Arc::clone(&self.world), id, lock, plan);
            let task = self.exec.spawn(Some(id), "main", Box::pin(future));
            self.scheduler.adopt(task);
        }
    }

    fn runnable(&self) -> Vec<u64> {
        let st = self.world.lock();
        self.exec
            .runnable(|c| c.is_none_or(|c| !st.is_paused(c) && !st.procs[c].crashed))
    }

    fn run(mut self) -> RunReport {
        self.set_up();
        loop {
            if self.runnable().is_empty() {
                if self.exec.is_empty() {
                    break;
                }
                let next = {
                    let st = self.world.lock();
                    [st.next_timer(), st.next_unpause()]
                        .into_iter()
                        .flatten()
                        .min()
                };
                match next {
                    Some(at) => {
                        self.world.advance_to(at);
                        continue;
                    }
                    None => {
                        let tasks: Vec<String> = self
                            .exec
                            .ids()
                            .into_iter()
                            .map(|id| format!("t{id} ({})", self.exec.label_of(id)))
                            .collect();
                        self.world.lock().find_stuck(format!(
                            "nothing can run and no timer is pending, but {} task(s) remain: {} (a lost wake-up)",
                            tasks.len(),
                            tasks.join(", ")
                        ));
                        break;
                    }
                }
            }
            let step = {
                let mut st = self.world.lock();
                st.step += 1;
                st.step
            };
            if step > self.config.step_limit {
                self.world
                    .lock()
                    .find_stuck(format!("the run exceeded {} steps", self.config.step_limit));
                break;
            }
            self.faults();
            let runnable = self.runnable();
            if runnable.is_empty() {
                continue;
            }
            let order: Vec<u64> = match self.last.filter(|t| runnable.contains(t)) {
                Some(last) => std::iter::once(last)
                    .chain(runnable.iter().copied().filter(|&t| t != last))
                    .collect(),
                None => runnable,
            };
            let index = {
                let mut st = self.world.lock();
                let (scheduler, last) = (&mut self.scheduler, self.last);
                let n = order.len() as u64;
                st.decisions
                    .choose(n, |rng| scheduler.pick(&order, step, last, rng))
            };
            let task = order[usize::try_from(index).unwrap_or(0).min(order.len() - 1)];
            self.exec.poll(task, &self.world);
            for (id, label) in self.exec.adopt_spawned(&self.world) {
                self.scheduler.adopt(id);
                if label == "heartbeat" {
                    self.world.lock().obs.adopt_heartbeat(id);
                }
            }
            self.last = Some(task);
            self.world.lock().check_step();
        }
        self.finish()
    }

    /// Draws this step's faults (a fixed number of decisions per enabled
    /// kind, so that a shrunk tape stays aligned) and applies them.
    fn faults(&mut self) {
        let n = self.config.contenders as u64;
        let p = self.profile.clone();
        let mut crash = None;
        let mut pause = None;
        let mut clock = None;
        let mut intrude = None;
        let mut jitter = None;
        {
            let mut st = self.world.lock();
            let d = &mut st.decisions;
            if p.crash_ppm > 0 {
                let hit = d.chance(p.crash_ppm);
                let who = d.below(n);
                crash = hit.then_some(who as usize);
            }
            if p.pause_ppm > 0 {
                let hit = d.chance(p.pause_ppm);
                let who = d.below(n);
                let long = d.below(2) == 1 && p.long_pauses;
                let len = d.below(1_000_000);
                pause = hit.then_some((who as usize, long, len));
            }
            if p.clock_ppm > 0 {
                let hit = d.chance(p.clock_ppm);
                let who = d.below(n);
                let to = d.below(1 << 40);
                clock = hit.then_some((who as usize, to));
            }
            if p.intruder_ppm > 0 {
                let hit = d.chance(p.intruder_ppm);
                let kind = d.below(2);
                intrude = hit.then_some(kind);
            }
            let hit = d.chance(p.jitter_ppm);
            let micros = d.below(p.jitter_max_us) + 1;
            if hit {
                jitter = Some(Duration::from_micros(micros));
            }
        }
        if let Some(who) = crash {
            self.crash(who);
        }
        if let Some((who, long, len)) = pause {
            self.pause(who, long, len);
        }
        if let Some((who, to)) = clock {
            self.step_clock(who, to);
        }
        if let Some(kind) = intrude {
            self.intrude(kind);
        }
        if let Some(by) = jitter {
            let now = self.world.lock().now;
            self.world.advance_to(now + by);
        }
    }

    fn crash(&mut self, who: usize) {
        {
            let mut st = self.world.lock();
            let alive = st
                .procs
                .iter()
                .filter(|p| !p.crashed && !p.finished)
                .count();
            let Some(proc) = st.procs.get(who) else {
                return;
            };
            // Keep one contender alive: somebody must be there to check
            // liveness and to clean up.
            if proc.crashed || proc.finished || alive <= 1 {
                return;
            }
            st.procs[who].crashed = true;
            st.procs[who].crashed_at = Some(st.now);
            st.procs[who].paused_until = None;
            let now = st.now;
            let holding = st.obs.leave_cs(who).is_some();
            st.crash_obligation(who);
            st.obs.crashed(who);
            st.obs.note_fault(
                now,
                if holding {
                    "crash.holding"
                } else {
                    "crash.waiting"
                },
            );
            st.note_as("sim", &format!("FAULT crash c{who}"));
        }
        // Drop with no lock held: drops may report into the world. Tasks
        // it spawned that the executor has not adopted yet (a timer's
        // waker may spawn, between two polls) die with it too.
        let tasks = self.exec.kill(who);
        drop(tasks);
        let pending: Vec<_> = {
            let mut st = self.world.lock();
            let (theirs, others) = std::mem::take(&mut st.spawned)
                .into_iter()
                .partition(|s| s.contender == Some(who));
            st.spawned = others;
            theirs
        };
        drop(pending);
        let shared = self.world.lock().obs.leave_cs(who);
        drop(shared);
    }

    fn pause(&mut self, who: usize, long: bool, drawn: u64) {
        let mut st = self.world.lock();
        let Some(proc) = st.procs.get(who) else {
            return;
        };
        if proc.crashed || proc.finished || proc.paused_until.is_some() {
            return;
        }
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
        let short_max = ms(self.profile.short_pause_max);
        let len = if long {
            let from = ms(st.obs.limits.long_pause) + 1;
            Duration::from_millis(from + drawn % (2 * ms(self.config.stale)))
        } else {
            Duration::from_millis(1 + drawn % short_max)
        };
        let now = st.now;
        st.procs[who].paused_until = Some(now + len);
        st.procs[who].pauses.push((now, len));
        let long = len > st.obs.limits.long_pause;
        st.obs
            .note_fault(now, if long { "pause.long" } else { "pause.short" });
        st.note_as("sim", &format!("FAULT pause c{who} for {len:?}"));
    }

    fn step_clock(&mut self, who: usize, drawn: u64) {
        let mut st = self.world.lock();
        let bound = self.profile.offset_bound_ns;
        let mut rng = SplitMix64::new(drawn);
        let to = random_offset(&mut rng, bound);
        let Some(proc) = st.procs.get(who) else {
            return;
        };
        if proc.crashed || proc.finished {
            return;
        }
        let from = proc.offset_ns;
        // One host, one clock: its step moves all of its processes.
        let host = st.host_of(who);
        let several = st.hosts.count > 1;
        for id in 0..st.procs.len() {
            if id == who || (several && st.host_of(id) == host) {
                st.procs[id].offset_ns = to;
            }
        }
        let now = st.now;
        st.obs.note_fault(now, "clock.step");
        let ms = |ns: i64| ns as f64 / 1e6;
        st.note_as(
            "sim",
            &format!(
                "FAULT step c{who}'s wall clock from {:+.1}ms to {:+.1}ms",
                ms(from),
                ms(to)
            ),
        );
    }

    fn intrude(&mut self, kind: u64) {
        let mut st = self.world.lock();
        let lock = st.lock_path.clone();
        let now = st.true_wall();
        let at = st.now;
        match (kind, st.tree.lookup(&lock)) {
            (0, Ok(ino)) => {
                let Some(copy) = st.tree.copy_of(ino, now, Actor::Intruder) else {
                    return;
                };
                if st.tree.install(copy, &lock).is_ok() {
                    st.obs.intruded = true;
                    st.obs.note_fault(at, "intruder.copy");
                    let was = st.describe(ino);
                    st.note_as(
                        "sim",
                        &format!("FAULT an outside tool replaces the lock file ({was}) by a copy, ino {copy}"),
                    );
                }
            }
            (1, Err(_))
                if st
                    .tree
                    .symlink(Path::new("/nonexistent"), &lock, now, Actor::Intruder)
                    .is_ok() =>
            {
                st.obs.intruded = true;
                st.obs.note_fault(at, "intruder.symlink");
                st.note_as(
                    "sim",
                    "FAULT an outside process plants a dangling symlink at the lock path",
                );
            }
            _ => {}
        }
    }

    fn finish(mut self) -> RunReport {
        let (violations, counters, trace, tape, steps, elapsed) = {
            let mut st = self.world.lock();
            let all_finished = st.procs.iter().all(|p| p.finished && !p.crashed);
            st.check_end(all_finished);
            let violations = st.obs.verdicts(&st.procs);
            for v in &violations {
                let line = v.to_string();
                st.note_as("check", &line);
            }
            let counters = std::mem::take(&mut st.obs.counters);
            let tape = st.decisions.take_tape();
            (
                violations,
                counters,
                st.trace.take_lines(),
                tape,
                st.step,
                st.now,
            )
        };
        // Break the reference cycles (guards and tasks hold the world).
        self.exec.clear();
        let guards = self.world.lock().obs.take_all_cs();
        drop(guards);
        let spawned = std::mem::take(&mut self.world.lock().spawned);
        drop(spawned);
        RunReport {
            seed: self.seed,
            profile: self.profile.to_string(),
            steps,
            elapsed,
            violations,
            counters,
            trace,
            tape: (!tape.is_empty() || self.replaying).then_some(tape),
        }
    }
}

/// A stale lock left by a process that died long ago.
fn plant_dead_lock(st: &mut State, lock: &Path, stamp: SystemTime) {
    let owner = OwnerId::from_record("00000000-dead-4000-8000-000000000000")
        .unwrap_or_else(OwnerId::random);
    let record = LockRecord::new(4_242, owner, stamp);
    let text = heldlock_fs::record::encode(&record);
    let now = st.true_wall();
    if let Ok(ino) = st.tree.create_new(lock, now, Actor::Setup) {
        let _ = st.tree.write(ino, text.as_bytes(), now);
        let _ = st.tree.set_mtime(ino, stamp);
    }
}
