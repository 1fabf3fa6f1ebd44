//! `cargo xtask bench handoff` (`cargo bench -p heldlock-tests --bench
//! handoff`): hand-off between processes, in one run, on tmpfs (`/dev/shm`
//! when it is there, else the system temporary directory), with real
//! processes (`heldlock-bench-worker`, one per contender).
//!
//! Lock kinds (see the worker's docs): `heldlock` (`FileLock`, defaults
//! except stale 30 s and a 120 s `max_wait`), `floor` (the bare system calls
//! of heldlock's protocol, a waiter retrying at once), `flock`
//! (`File::lock`), and the reference's protocol as a poll loop at 50 ms and
//! 1 ms.
//!
//! * Contended: P = 2, 4, 8 processes, each doing K read-modify-write
//!   increments of a counter file under the lock (the same P and K for every
//!   kind; [`contended::REPEATS`] runs each, the run with the median
//!   throughput is reported). From the workers' logs: acquisitions per
//!   second, real hand-offs per second (acquisitions by another process than
//!   the previous one) and their share (fairness), p50 / p99 acquire latency
//!   (acquire called -> held), the p99 of the latency beyond the time that
//!   other processes spent in their critical sections meanwhile, the lock's
//!   median idle gap between one critical section's end and the next one's
//!   start, and CPU per acquisition (the children's user + system time from
//!   `/proc/self/stat`, process start-up included). Checked: the counter is
//!   P x K, every value 1..=P x K was written exactly once, critical
//!   sections never overlap.
//! * Crash recovery: a holder is SIGKILLed while another process waits;
//!   time from the kill to the waiter holding the lock (median of
//!   [`timed::CRASH_REPEATS`]), for heldlock (stale 30 s) and flock.
//! * Hand-over: one process holds the lock while another sleeps on it; the
//!   holder releases and does not take it again; time from the release call
//!   to the waiter holding the lock (median of [`timed::HANDOVER_REPEATS`]),
//!   for heldlock, flock and the reference at 50 ms and 1 ms. This is the
//!   cost of a waiter sleeping through a release, which the contended runs
//!   hide when the releasing process takes its lock straight back.
//! * Uncontended: acquire + release pairs per second in one process (median
//!   of 3 processes).
//!
//! The run ends with a summary (Markdown tables, as copied into
//! `docs/benchmarks.md`) and the goals as ratios within the run.
//!
//! Without `--bench` (`cargo test --benches`), a small smoke run of every
//! part checks that it all works.
//!
//! One bench binary (each costs CI link time); its parts are modules in
//! `handoff/`: [`worker`], [`contended`], [`timed`], [`report`] and
//! [`stats`].
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::{Duration, Instant};

#[path = "handoff/contended.rs"]
mod contended;
#[path = "handoff/report.rs"]
mod report;
#[path = "handoff/stats.rs"]
mod stats;
#[path = "handoff/timed.rs"]
mod timed;
#[path = "handoff/worker.rs"]
mod worker;

use contended::{Contended, REPEATS, contended_run};
use report::{pairs_label, summary};
use stats::{median_by, ms, us};
use timed::{CRASH_REPEATS, HANDOVER_REPEATS, Timings, crash_takeover, handover, pairs_per_second};
use worker::Kind;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let started = Instant::now();
    let dir = heldlock_tests::floor::bench_dir().unwrap();
    let dir = dir.path();
    println!("handoff benchmarks in {}", dir.display());
    // (P, K): every kind runs the same workload.
    let (workloads, repeats, crash_repeats, handover_repeats, pairs): (
        &[(usize, u32)],
        _,
        _,
        _,
        u32,
    ) = if full {
        (
            &[(2, 9000), (4, 4500), (8, 2250)],
            REPEATS,
            CRASH_REPEATS,
            HANDOVER_REPEATS,
            20_000,
        )
    } else {
        (&[(2, 50), (4, 25)], 1, 1, 1, 200)
    };

    let mut contended: Vec<Contended> = Vec::new();
    for &(processes, increments) in workloads {
        for kind in Kind::ALL {
            let runs: Vec<Contended> = (0..repeats)
                .map(|_| contended_run(dir, kind, processes, increments))
                .collect();
            let lowest = runs.iter().map(|r| r.rate).fold(f64::INFINITY, f64::min);
            let highest = runs.iter().map(|r| r.rate).fold(0.0, f64::max);
            let mut run = median_by(runs, |r| r.rate);
            run.spread = (lowest, highest);
            println!(
                "handoff/contended/{}/P={processes}/K={increments}: {:.0} acquisitions/s (runs {:.0}-{:.0}), {:.0} hand-offs/s (share {:.2}), latency p50 {} p99 {} max {} (p99 beyond others' critical sections {}), critical section {}, gap {}, CPU {} per acquisition, {:.2} s",
                kind.label(),
                run.rate,
                run.spread.0,
                run.spread.1,
                run.handoff_rate,
                run.fairness,
                ms(run.p50),
                ms(run.p99),
                ms(run.max),
                ms(run.p99_beyond),
                us(run.cs),
                us(run.gap),
                us(Duration::from_secs_f64(run.cpu)),
                run.wall.as_secs_f64(),
            );
            contended.push(run);
        }
    }

    let crash = Timings::measure(
        "crash",
        "takeover",
        &[Kind::Heldlock, Kind::Flock],
        crash_repeats,
        |kind, round| crash_takeover(dir, kind, round),
    );
    let handovers = Timings::measure(
        "handover",
        "release -> waiter holds",
        &[
            Kind::Heldlock,
            Kind::Flock,
            Kind::Reference(50),
            Kind::Reference(1),
        ],
        handover_repeats,
        |kind, round| handover(dir, kind, round),
    );

    let mut uncontended: Vec<(Kind, f64)> = Vec::new();
    for kind in [
        Kind::Heldlock,
        Kind::Floor,
        Kind::Flock,
        Kind::Reference(50),
    ] {
        // flock pairs are ~50x cheaper: more of them for a measurable time.
        let n = if kind == Kind::Flock {
            pairs * 20
        } else {
            pairs
        };
        let runs: Vec<f64> = (0..3).map(|_| pairs_per_second(dir, kind, n)).collect();
        let rate = median_by(runs, |r| *r);
        println!(
            "handoff/uncontended/{}: {rate:.0} pairs/s ({}/pair, median of 3 processes x {n})",
            pairs_label(kind),
            us(Duration::from_secs_f64(1.0 / rate))
        );
        uncontended.push((kind, rate));
    }

    println!(
        "{}",
        summary(
            &contended,
            &crash,
            &handovers,
            &uncontended,
            workloads,
            started.elapsed()
        )
    );
}
