//! What a campaign explores ([`SimConfig`]), and how one seed turns it into
//! a concrete scenario ([`Profile`]): which faults at which rates, which
//! scheduling strategy, which clock skew, what each contender does.

use std::fmt;
use std::time::Duration;

use crate::rng::SplitMix64;

/// Which kinds of fault a run may inject. Each kind that is allowed is
/// switched on by about half of the seeds, so a campaign also runs
/// fault-free schedules and every combination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Faults {
    /// Crash a contender at any step: its futures and tasks are dropped,
    /// its files stay.
    pub crash: bool,
    /// Pause a contender (all its tasks) for a while, never longer than
    /// `stale - heartbeat - allowance`.
    pub pause: bool,
    /// Also pause contenders for longer than `stale - heartbeat`, which
    /// lets peers break their lock: the checker then demands that they find
    /// out (`refresh() == Ok(false)`, `lost()`), not exclusion.
    pub long_pause: bool,
    /// Fail file-system operations with `EIO`, `ENOSPC` or `EACCES`.
    pub io: bool,
    /// Step contenders' wall clocks (within the skew mode's bounds).
    pub clock: bool,
    /// An outside process replaces the lock file by a copy of itself (new
    /// inode, same bytes and stamp), or plants a symbolic link at the path.
    pub intruder: bool,
}

impl Faults {
    /// Every kind of fault.
    pub const ALL: Faults = Faults {
        crash: true,
        pause: true,
        long_pause: true,
        io: true,
        clock: true,
        intruder: true,
    };

    /// No faults at all.
    pub const NONE: Faults = Faults {
        crash: false,
        pause: false,
        long_pause: false,
        io: false,
        clock: false,
        intruder: false,
    };

    /// The names of the allowed kinds, comma-separated (`none` if none).
    pub fn names(&self) -> String {
        let names: Vec<&str> = [
            (self.crash, "crash"),
            (self.pause, "pause"),
            (self.long_pause, "long-pause"),
            (self.io, "io"),
            (self.clock, "clock"),
            (self.intruder, "intruder"),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| name)
        .collect();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(",")
        }
    }

    /// Parses [`names`](Self::names)' format (`all` and `none` too).
    pub fn parse(text: &str) -> Option<Faults> {
        let mut faults = Faults::NONE;
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "all" => faults = Faults::ALL,
                "none" => {}
                "crash" => faults.crash = true,
                "pause" => faults.pause = true,
                "long-pause" => faults.long_pause = true,
                "io" => faults.io = true,
                "clock" => faults.clock = true,
                "intruder" => faults.intruder = true,
                _ => return None,
            }
        }
        Some(faults)
    }
}

/// How the contenders' wall clocks relate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skew {
    /// Each seed picks `None`, `Within` or `RuleOff`.
    Auto,
    /// One shared wall clock (one host).
    None,
    /// Offsets and steps keep every pair of clocks within `max_clock_skew`,
    /// which the options declare.
    Within,
    /// Offsets beyond `max_clock_skew` with the wall-clock rule on: the
    /// configuration the option exists to prevent. Expect violations.
    Beyond,
    /// Clocks far apart and stepping, with the wall-clock rule off.
    RuleOff,
}

impl Skew {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Skew::Auto => "auto",
            Skew::None => "none",
            Skew::Within => "within",
            Skew::Beyond => "beyond",
            Skew::RuleOff => "rule-off",
        }
    }

    /// Parses [`name`](Self::name).
    pub fn parse(text: &str) -> Option<Skew> {
        [
            Skew::Auto,
            Skew::None,
            Skew::Within,
            Skew::Beyond,
            Skew::RuleOff,
        ]
        .into_iter()
        .find(|s| s.name() == text)
    }
}

/// How the scheduler picks the next task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Each seed picks one.
    Auto,
    /// Uniformly among the runnable tasks at every step.
    Random,
    /// Probabilistic concurrency testing (Burckhardt et al.): random task
    /// priorities, the highest runnable runs, and at a few random steps the
    /// running task drops to the lowest priority. Finds races that need a
    /// task to be preempted at one exact point much more often than
    /// uniform choice.
    Pct,
}

impl Strategy {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Auto => "auto",
            Strategy::Random => "random",
            Strategy::Pct => "pct",
        }
    }

    /// Parses [`name`](Self::name).
    pub fn parse(text: &str) -> Option<Strategy> {
        [Strategy::Auto, Strategy::Random, Strategy::Pct]
            .into_iter()
            .find(|s| s.name() == text)
    }
}

/// What to simulate: the fixed part of a campaign. Each seed then draws the
/// rest ([`Profile`]).
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// How many contenders run `acquire`, a critical section and `release`.
    pub contenders: usize,
    /// How many hosts the contenders are spread over, round robin (see
    /// `--hosts` in `docs/testing.md`): each host has its own device
    /// numbers, wall clock, host and boot identity and kernel locks, and
    /// some seeds make each host's files unreadable to the others.
    pub hosts: usize,
    /// How many times each contender does so.
    pub rounds: usize,
    /// Which faults may be injected.
    pub faults: Faults,
    /// Fault rates in percent of the defaults (100 = default).
    pub fault_rate: u32,
    /// Inject I/O errors only into heartbeat refreshes (to study a holder
    /// whose heartbeat keeps failing while its peers' I/O works).
    pub io_heartbeat_only: bool,
    /// The clock-skew mode.
    pub skew: Skew,
    /// The scheduling strategy.
    pub strategy: Strategy,
    /// Whether a stale lock of a dead process is at the path at the start
    /// (`None`: each seed decides).
    pub initial_lock: Option<bool>,
    /// The lock's `stale`.
    pub stale: Duration,
    /// Whether contenders disagree on `stale`: every odd-numbered one uses a
    /// quarter of it (see [`own_stale`](Self::own_stale)). A holder's record
    /// declares its own, and a contender must judge by the longer one.
    pub mixed_stale: bool,
    /// Every contender's `max_declared_stale` (`None`: the library's
    /// default). A tiny cap makes contenders ignore declarations, which
    /// shows that the checker catches the breaks that follow.
    pub declared_stale_cap: Option<Duration>,
    /// The lock's `poll`.
    pub poll: Duration,
    /// The lock's `max_wait`.
    pub max_wait: Duration,
    /// A run stops (as `stuck`) after this many steps.
    pub step_limit: u64,
    /// Overrides the liveness bound the checker demands (default: `stale +
    /// poll + 2 * max_clock_skew + allowance`, or `stale + 2 * poll +
    /// allowance` with the wall-clock rule off). For tests that show the
    /// liveness check can fail.
    pub liveness_bound: Option<Duration>,
    /// A test of the checker, not of the protocol: contenders look and
    /// break as `heldlock break --force` does, taking a file they cannot
    /// read for a breakable lock. With private files on several hosts, the
    /// `unread-break` invariant must catch them.
    pub break_unreadable: bool,
    /// The protocol's safeguards (all on by default).
    #[cfg(feature = "safeguard-switches")]
    pub safeguards: heldlock_fs::Safeguards,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            contenders: 3,
            hosts: 1,
            rounds: 2,
            faults: Faults::ALL,
            fault_rate: 100,
            io_heartbeat_only: false,
            skew: Skew::Auto,
            strategy: Strategy::Auto,
            initial_lock: None,
            stale: Duration::from_secs(1),
            mixed_stale: false,
            declared_stale_cap: None,
            poll: Duration::from_millis(50),
            max_wait: Duration::from_secs(5),
            step_limit: 200_000,
            liveness_bound: None,
            break_unreadable: false,
            #[cfg(feature = "safeguard-switches")]
            safeguards: heldlock_fs::Safeguards::default(),
        }
    }
}

impl SimConfig {
    /// Contender `id`'s own `stale`: the lock's, or a quarter of it for odd
    /// contenders with [`mixed_stale`](Self::mixed_stale).
    pub fn own_stale(&self, id: usize) -> Duration {
        if self.mixed_stale && id % 2 == 1 {
            self.stale / 4
        } else {
            self.stale
        }
    }

    /// The shortest `stale` of any contender: what bounds a pause that no
    /// holder may be broken for.
    pub fn shortest_stale(&self) -> Duration {
        (0..self.contenders)
            .map(|id| self.own_stale(id))
            .min()
            .unwrap_or(self.stale)
    }
}

/// The heartbeat `LockOptions` derives from `stale` by default.
pub(crate) fn default_heartbeat(stale: Duration) -> Duration {
    heldlock_core::LockOptions::new(stale)
        .validate()
        .map(|t| t.heartbeat)
        .unwrap_or(stale / 3)
}

/// What one contender does in one round.
#[derive(Clone, Debug)]
pub(crate) struct RoundPlan {
    /// The virtual-time sleeps of its critical section.
    pub(crate) sleeps: Vec<Duration>,
    /// How long it waits after the round.
    pub(crate) gap: Duration,
}

/// What one contender does.
#[derive(Clone, Debug)]
pub(crate) struct ContenderPlan {
    pub(crate) start: Duration,
    pub(crate) rounds: Vec<RoundPlan>,
}

/// The scheduling strategy one seed uses.
#[derive(Clone, Debug)]
pub(crate) enum Sched {
    Random,
    Pct { depth: u64, change_points: Vec<u64> },
}

/// The concrete scenario of one seed.
#[derive(Clone, Debug)]
pub struct Profile {
    pub(crate) initial_lock: bool,
    pub(crate) dir_exists: bool,
    pub(crate) sched: Sched,
    pub(crate) crash_ppm: u32,
    pub(crate) pause_ppm: u32,
    pub(crate) long_pauses: bool,
    pub(crate) io_ppm: u32,
    pub(crate) clock_ppm: u32,
    pub(crate) intruder_ppm: u32,
    pub(crate) jitter_ppm: u32,
    pub(crate) jitter_max_us: u64,
    pub(crate) skew: Skew,
    pub(crate) max_clock_skew: Duration,
    pub(crate) wall_clock_rule: bool,
    /// The largest |offset| a clock may be stepped to, in nanoseconds.
    pub(crate) offset_bound_ns: i64,
    pub(crate) offsets_ns: Vec<i64>,
    pub(crate) heartbeat: Duration,
    /// How the hosts behave.
    pub(crate) hosts: crate::hosts::HostModel,
    /// The longest "short" pause: `stale - heartbeat - allowance`.
    pub(crate) short_pause_max: Duration,
    pub(crate) plans: Vec<ContenderPlan>,
}

/// The scheduling allowance: virtual time the protocol's own steps may take
/// on top of the timings (5% of `stale`).
pub(crate) fn allowance(stale: Duration) -> Duration {
    stale / 20
}

impl Profile {
    /// The scenario `seed` draws from `config`.
    pub fn derive(config: &SimConfig, seed: u64) -> Profile {
        let mut rng = SplitMix64::new(seed ^ 0xC0FF_EE00_D15E_A5E5);
        let faults = config.faults;
        let rate = |base: u32| base.saturating_mul(config.fault_rate) / 100;
        let on = |allowed: bool, rng: &mut SplitMix64| allowed && rng.chance(500_000);
        let crash_ppm = if on(faults.crash, &mut rng) {
            rate(600)
        } else {
            0
        };
        let pause_ppm = if on(faults.pause || faults.long_pause, &mut rng) {
            rate(1_500)
        } else {
            0
        };
        let long_pauses = faults.long_pause && (!faults.pause || rng.chance(500_000));
        let io_ppm = if on(faults.io, &mut rng) {
            rate(1_500)
        } else {
            0
        };
        let intruder_ppm = if on(faults.intruder, &mut rng) {
            rate(250)
        } else {
            0
        };
        let skew = match config.skew {
            Skew::Auto => match rng.below(10) {
                0..=3 => Skew::None,
                4..=6 => Skew::Within,
                _ => Skew::RuleOff,
            },
            other => other,
        };
        let stale = config.stale;
        let (max_clock_skew, wall_clock_rule, offset_bound) = match skew {
            Skew::Auto | Skew::None => (Duration::ZERO, true, Duration::ZERO),
            Skew::Within => (stale / 5, true, stale / 10),
            Skew::Beyond => (Duration::ZERO, true, stale * 3 / 2),
            Skew::RuleOff => (Duration::ZERO, false, stale * 3),
        };
        let offset_bound_ns = i64::try_from(offset_bound.as_nanos()).unwrap_or(i64::MAX);
        let clock_ppm = if offset_bound_ns > 0 && on(faults.clock, &mut rng) {
            rate(800)
        } else {
            0
        };
        let offsets_ns = (0..config.contenders)
            .map(|_| random_offset(&mut rng, offset_bound_ns))
            .collect();
        let sched = match config.strategy {
            Strategy::Random => Sched::Random,
            Strategy::Pct => pct(&mut rng),
            Strategy::Auto if rng.chance(300_000) => Sched::Random,
            Strategy::Auto => pct(&mut rng),
        };
        let initial_lock = config.initial_lock.unwrap_or_else(|| rng.chance(400_000));
        let dir_exists = rng.chance(700_000);
        let plans = (0..config.contenders)
            .map(|_| ContenderPlan {
                start: if rng.chance(500_000) {
                    Duration::ZERO
                } else {
                    Duration::from_millis(rng.range(1, 50))
                },
                rounds: (0..config.rounds)
                    .map(|_| {
                        // One round in five holds the lock for several
                        // heartbeats (up to 1.8 stale).
                        let longest = if rng.chance(200_000) { 600 } else { 150 };
                        RoundPlan {
                            sleeps: (0..rng.range(1, 3))
                                .map(|_| Duration::from_millis(rng.range(5, longest)))
                                .collect(),
                            gap: Duration::from_millis(rng.range(0, 100)),
                        }
                    })
                    .collect(),
            })
            .collect();
        let heartbeat = default_heartbeat(stale);
        // A pause that no holder may be broken for is bounded by the
        // shortest-lived holder's lease.
        let shortest = config.shortest_stale();
        let short_pause_max = shortest
            .saturating_sub(default_heartbeat(shortest))
            .saturating_sub(allowance(shortest));
        // Drawn last, so that a one-host configuration draws what it drew
        // before hosts existed.
        let several = config.hosts > 1;
        let hosts = crate::hosts::HostModel {
            count: config.hosts.max(1),
            private_files: several && rng.chance(300_000),
            blind_probe: rng.chance(200_000),
        };
        Profile {
            initial_lock,
            dir_exists,
            sched,
            crash_ppm,
            pause_ppm,
            long_pauses,
            io_ppm,
            clock_ppm,
            intruder_ppm,
            jitter_ppm: 250_000,
            jitter_max_us: 1_000,
            skew,
            max_clock_skew,
            wall_clock_rule,
            offset_bound_ns,
            offsets_ns,
            heartbeat,
            hosts,
            short_pause_max,
            plans,
        }
    }
}

/// A wall-clock offset in `[-bound, bound]`, so that any two differ by at
/// most `2 * bound` (for `Within`, exactly the `max_clock_skew` declared).
pub(crate) fn random_offset(rng: &mut SplitMix64, bound_ns: i64) -> i64 {
    if bound_ns <= 0 {
        return 0;
    }
    let span = bound_ns.unsigned_abs().saturating_mul(2);
    let drawn = rng.below(span.saturating_add(1));
    i64::try_from(drawn).unwrap_or(0) - bound_ns
}

fn pct(rng: &mut SplitMix64) -> Sched {
    let depth = rng.range(1, 4);
    let mut change_points: Vec<u64> = (1..depth).map(|_| rng.range(1, 3_000)).collect();
    change_points.sort_unstable();
    Sched::Pct {
        depth,
        change_points,
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sched = match &self.sched {
            Sched::Random => "random".to_owned(),
            Sched::Pct { depth, .. } => format!("pct(depth {depth})"),
        };
        let mut faults = Vec::new();
        for (ppm, name) in [
            (self.crash_ppm, "crash"),
            (
                self.pause_ppm,
                if self.long_pauses {
                    "pause(long too)"
                } else {
                    "pause"
                },
            ),
            (self.io_ppm, "io"),
            (self.clock_ppm, "clock"),
            (self.intruder_ppm, "intruder"),
        ] {
            if ppm > 0 {
                faults.push(name);
            }
        }
        let faults = if faults.is_empty() {
            "none".to_owned()
        } else {
            faults.join("+")
        };
        write!(
            f,
            "schedule {sched}, faults {faults}, skew {} (max_clock_skew {:?}, wall-clock rule {}), stale lock at start: {}, lock dir exists: {}, hosts {}{}{}",
            self.skew.name(),
            self.max_clock_skew,
            if self.wall_clock_rule { "on" } else { "off" },
            self.initial_lock,
            self.dir_exists,
            self.hosts.count,
            if self.hosts.private_files {
                " (private files)"
            } else {
                ""
            },
            if self.hosts.blind_probe {
                ", blind host probe"
            } else {
                ""
            },
        )
    }
}
