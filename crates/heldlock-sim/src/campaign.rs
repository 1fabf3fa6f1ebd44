//! Campaigns: many seeds of one [`SimConfig`], with figures (schedules per
//! second, faults exercised) and the failing seeds.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use crate::check::{Class, Counters, Invariant, Violation};
use crate::config::SimConfig;
use crate::sim::{RunOptions, RunReport, run};

/// A campaign: seeds `first .. first + seeds` of `config`.
#[derive(Clone, Debug)]
pub struct Campaign {
    /// What to simulate.
    pub config: SimConfig,
    /// The first seed.
    pub first: u64,
    /// How many seeds.
    pub seeds: u64,
    /// Threads to run seeds on (each run is single-threaded and
    /// independent; results do not depend on this).
    pub jobs: usize,
}

/// The first finding of one class in one seed.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The seed.
    pub seed: u64,
    /// Its first finding of that class.
    pub violation: Violation,
}

/// What a campaign found and exercised.
#[derive(Clone, Debug, Default)]
pub struct CampaignReport {
    /// Seeds run.
    pub runs: u64,
    /// Real (wall-clock) time the campaign took.
    pub wall: Duration,
    /// Scheduling steps, summed over runs.
    pub steps: u64,
    /// Virtual time, summed over runs.
    pub virtual_time: Duration,
    /// What the runs exercised, summed (`crash.holding`, `io.EIO.rename`, ...).
    pub counters: Counters,
    /// Runs with at least one finding of each (invariant, class).
    pub findings: BTreeMap<(Invariant, Class), u64>,
    /// The first real violation of each failing seed (in seed order).
    pub failures: Vec<Failure>,
    /// The first known-race finding of each seed that had one (in seed order).
    pub known: Vec<Failure>,
    /// The first known-late-loss finding of each seed that had one.
    pub late: Vec<Failure>,
}

impl CampaignReport {
    /// Seeds per second of real time.
    pub fn schedules_per_second(&self) -> f64 {
        let secs = self.wall.as_secs_f64();
        if secs > 0.0 {
            self.runs as f64 / secs
        } else {
            0.0
        }
    }

    fn add(&mut self, report: &RunReport) {
        self.runs += 1;
        self.steps += report.steps;
        self.virtual_time += report.elapsed;
        for (name, n) in &report.counters {
            *self.counters.entry(name.clone()).or_default() += n;
        }
        let mut seen = std::collections::BTreeSet::new();
        for v in &report.violations {
            if seen.insert((v.invariant, v.class)) {
                *self.findings.entry((v.invariant, v.class)).or_default() += 1;
            }
        }
        if let Some(v) = report.first(Class::Real) {
            self.failures.push(Failure {
                seed: report.seed,
                violation: v.clone(),
            });
        }
        if let Some(v) = report.first(Class::KnownRace) {
            self.known.push(Failure {
                seed: report.seed,
                violation: v.clone(),
            });
        }
        if let Some(v) = report.first(Class::LateLoss) {
            self.late.push(Failure {
                seed: report.seed,
                violation: v.clone(),
            });
        }
    }

    fn merge(&mut self, other: CampaignReport) {
        self.runs += other.runs;
        self.steps += other.steps;
        self.virtual_time += other.virtual_time;
        for (name, n) in other.counters {
            *self.counters.entry(name).or_default() += n;
        }
        for (key, n) in other.findings {
            *self.findings.entry(key).or_default() += n;
        }
        self.failures.extend(other.failures);
        self.known.extend(other.known);
        self.late.extend(other.late);
        self.failures.sort_by_key(|f| f.seed);
        self.known.sort_by_key(|f| f.seed);
        self.late.sort_by_key(|f| f.seed);
    }

    /// Runs with at least one real violation.
    pub fn failed_runs(&self) -> usize {
        self.failures.len()
    }
}

/// Runs the campaign.
pub fn run_campaign(campaign: &Campaign) -> CampaignReport {
    let config = &campaign.config;
    run_seeds(campaign.first, campaign.seeds, campaign.jobs, |seed| {
        run(config, seed, &RunOptions::default())
    })
}

/// Runs `one` on seeds `first .. first + seeds`, on `jobs` threads, and
/// sums the reports.
pub(crate) fn run_seeds(
    first: u64,
    seeds: u64,
    jobs: usize,
    one: impl Fn(u64) -> RunReport + Sync,
) -> CampaignReport {
    let started = Instant::now();
    let jobs = jobs.max(1);
    let mut total = CampaignReport::default();
    let part = |job: usize| {
        let mut part = CampaignReport::default();
        let mut seed = first + job as u64;
        let end = first.saturating_add(seeds);
        while seed < end {
            part.add(&one(seed));
            seed += jobs as u64;
        }
        part
    };
    if jobs == 1 {
        total.merge(part(0));
    } else {
        std::thread::scope(|scope| {
            let part = &part;
            let handles: Vec<_> = (0..jobs)
                .map(|job| scope.spawn(move || part(job)))
                .collect();
            for handle in handles {
                match handle.join() {
                    Ok(part) => total.merge(part),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
        });
    }
    total.wall = started.elapsed();
    total
}

impl fmt::Display for CampaignReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} schedules in {:.1} s: {:.0} schedules/s, {:.0} steps/s, {} steps, {:.0} s of virtual time",
            self.runs,
            self.wall.as_secs_f64(),
            self.schedules_per_second(),
            self.steps as f64 / self.wall.as_secs_f64().max(1e-9),
            self.steps,
            self.virtual_time.as_secs_f64()
        )?;
        writeln!(f, "exercised:")?;
        let mut groups: BTreeMap<&str, Vec<(&str, u64)>> = BTreeMap::new();
        for (name, n) in &self.counters {
            let group = name.split('.').next().unwrap_or(name);
            groups.entry(group).or_default().push((name, *n));
        }
        for (group, items) in groups {
            let items: Vec<String> = items
                .iter()
                .map(|(name, n)| format!("{name} {n}"))
                .collect();
            writeln!(f, "  {group:<9} {}", items.join(", "))?;
        }
        writeln!(f, "findings (runs with at least one):")?;
        if self.findings.is_empty() {
            writeln!(f, "  none")?;
        }
        for ((invariant, class), n) in &self.findings {
            writeln!(f, "  {invariant:<18} {class:?}: {n}")?;
        }
        Ok(())
    }
}
