//! Shrinking a failing run to a small schedule.
//!
//! A run's every decision is on its [tape](crate::tape); `0` is always the
//! dullest choice (no fault, no jitter, let the same task go on). The
//! shrinker replays edited tapes and keeps every edit after which the run
//! still shows the same kind of finding: it cuts the tape short, then zeroes
//! single entries (dropping faults and context switches one at a time),
//! then zeroes ever smaller blocks. What remains is a schedule with few
//! faults and few context switches that still fails, and a tape that
//! replays it (`replay --seed S --tape T`).

use std::fmt;

use crate::check::{Class, Invariant, Violation};
use crate::config::SimConfig;
use crate::sim::{RunOptions, RunReport, run};
use crate::tape::Tape;

/// The finding a shrunk run must still show: the same invariant, the same
/// class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// The invariant.
    pub invariant: Invariant,
    /// The class.
    pub class: Class,
}

impl Target {
    /// The target that `violation` meets.
    pub fn like(violation: &Violation) -> Target {
        Target {
            invariant: violation.invariant,
            class: violation.class,
        }
    }

    fn met_by<'r>(&self, report: &'r RunReport) -> Option<&'r Violation> {
        report
            .violations
            .iter()
            .find(|v| v.invariant == self.invariant && v.class == self.class)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {}", self.class, self.invariant)
    }
}

/// The result of [`shrink`].
#[derive(Clone, Debug)]
pub struct Shrunk {
    /// The seed (it still decides the scenario).
    pub seed: u64,
    /// The configuration options, as a command line.
    pub args: String,
    /// The shrunk tape.
    pub tape: Tape,
    /// The finding the shrunk run shows.
    pub violation: Option<Violation>,
    /// Steps until the finding, and faults injected, before and after.
    pub before: (u64, u64),
    /// See `before`.
    pub after: (u64, u64),
    /// Runs tried.
    pub attempts: u32,
    /// The shrunk run's trace up to shortly after the finding.
    pub trace: Vec<String>,
}

/// How many runs the shrinker may try.
const BUDGET: u32 = 2_500;

fn faults(report: &RunReport) -> u64 {
    report
        .counters
        .iter()
        .filter(|(name, _)| {
            ["crash", "pause", "io", "clock", "intruder"]
                .iter()
                .any(|kind| name.starts_with(kind))
        })
        .map(|(_, n)| n)
        .sum()
}

/// Shrinks the run of `seed` (or of `tape`, if given) to a smaller schedule
/// that still meets `target`.
pub fn shrink(config: &SimConfig, seed: u64, tape: Option<&Tape>, target: &Target) -> Shrunk {
    let first = run(
        config,
        seed,
        &RunOptions {
            trace: false,
            record: tape.is_none(),
            replay: tape.cloned(),
        },
    );
    let mut best = first.tape.clone().unwrap_or_default().trimmed();
    let score = |report: &RunReport| target.met_by(report).map(|v| (v.step, faults(report)));
    let before = score(&first).unwrap_or((first.steps, faults(&first)));
    let mut best_score = before;
    let mut attempts = 0;
    let try_tape = |candidate: &Tape, attempts: &mut u32| -> Option<(u64, u64)> {
        *attempts += 1;
        let options = RunOptions {
            trace: false,
            record: false,
            replay: Some(candidate.clone()),
        };
        score(&run(config, seed, &options))
    };
    if score(&first).is_some() {
        // 1. Cut the tape as short as it will go (binary search).
        let (mut lo, mut hi) = (0, best.len());
        while lo < hi && attempts < BUDGET {
            let mid = (lo + hi) / 2;
            let candidate = Tape(best.0[..mid].to_vec());
            match try_tape(&candidate, &mut attempts) {
                Some(s) if s <= best_score => {
                    hi = mid;
                    best_score = s;
                }
                _ => lo = mid + 1,
            }
        }
        best.0.truncate(hi);
        // 2. Zero blocks, from half the tape down to single entries.
        let mut block = best.len().div_ceil(2).max(1);
        loop {
            let mut start = 0;
            while start < best.len() && attempts < BUDGET {
                let end = (start + block).min(best.len());
                if best.0[start..end].iter().any(|&v| v != 0) {
                    let mut candidate = best.clone();
                    candidate.0[start..end].iter_mut().for_each(|v| *v = 0);
                    if let Some(s) = try_tape(&candidate, &mut attempts)
                        && s <= best_score
                    {
                        best = candidate;
                        best_score = s;
                    }
                }
                start = end;
            }
            if block == 1 || attempts >= BUDGET {
                break;
            }
            block = block.div_ceil(2);
        }
        best = best.trimmed();
    }
    let last = run(
        config,
        seed,
        &RunOptions {
            trace: true,
            record: false,
            replay: Some(best.clone()),
        },
    );
    let violation = target.met_by(&last).cloned();
    let until = violation.as_ref().map_or(u64::MAX, |v| v.step + 12);
    let trace = last
        .trace
        .iter()
        .filter(|line| {
            line.split_whitespace()
                .next()
                .and_then(|step| step.parse::<u64>().ok())
                .is_none_or(|step| step <= until)
        })
        .filter(|line| !line.contains(" check ") || line.contains(&target.invariant.to_string()))
        .cloned()
        .collect();
    Shrunk {
        seed,
        args: config.to_args(),
        tape: best,
        after: score(&last).unwrap_or(best_score),
        violation,
        before,
        attempts,
        trace,
    }
}

impl fmt::Display for Shrunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "shrunk in {} runs: from {} steps and {} faults to {} steps and {} faults before the finding",
            self.attempts, self.before.0, self.before.1, self.after.0, self.after.1
        )?;
        for line in &self.trace {
            writeln!(f, "{line}")?;
        }
        match &self.violation {
            Some(v) => writeln!(f, "{v}")?,
            None => writeln!(f, "(the shrunk run no longer shows the finding)")?,
        }
        writeln!(
            f,
            "replay: cargo xtask sim replay --seed {} {} --tape {}",
            self.seed, self.args, self.tape
        )
    }
}
