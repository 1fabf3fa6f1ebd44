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
//!   kind; [`REPEATS`] runs each, the run with the median throughput is
//!   reported). From the workers' logs: acquisitions per second, real
//!   hand-offs per second (acquisitions by another process than the
//!   previous one) and their share (fairness), p50 / p99 acquire latency
//!   (acquire called -> held), the p99 of the latency beyond the time that
//!   other processes spent in their critical sections meanwhile, the lock's
//!   median idle gap between one critical section's end and the next one's
//!   start, and CPU per acquisition (the children's user + system time from
//!   `/proc/self/stat`, process start-up included). Checked: the counter is
//!   P x K, every value 1..=P x K was written exactly once, critical
//!   sections never overlap.
//! * Crash recovery: a holder is SIGKILLed while another process waits;
//!   time from the kill to the waiter holding the lock (median of
//!   [`CRASH_REPEATS`]), for heldlock (stale 30 s) and flock.
//! * Hand-over: one process holds the lock while another sleeps on it; the
//!   holder releases and does not take it again; time from the release call
//!   to the waiter holding the lock (median of [`HANDOVER_REPEATS`]), for
//!   heldlock, flock and the reference at 50 ms and 1 ms. This is the cost of
//!   a waiter sleeping through a release, which the contended runs hide when
//!   the releasing process takes its lock straight back.
//! * Uncontended: acquire + release pairs per second in one process (median
//!   of 3 processes).
//!
//! The run ends with a summary (Markdown tables, as copied into
//! `docs/benchmarks.md`) and the goals as ratios within the run.
//!
//! Without `--bench` (`cargo test --benches`), a small smoke run of every
//! part checks that it all works.
#![allow(missing_docs, clippy::unwrap_used)]

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const WORKER: &str = env!("CARGO_BIN_EXE_heldlock-bench-worker");

/// Contended runs per (kind, P); the median by throughput is reported.
const REPEATS: usize = 5;
/// Kills per kind in the crash-recovery part.
const CRASH_REPEATS: usize = 7;
/// Hand-overs measured per kind (the reference's wait is spread over its
/// poll: more rounds for a steady median).
const HANDOVER_REPEATS: usize = 11;
/// Generous: a worker that takes longer has hung.
const DEADLINE: Duration = Duration::from_secs(180);
/// Kernel clock ticks per second (`USER_HZ`) for `/proc` CPU times.
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Heldlock,
    /// heldlock with bounded waiting, the bound in microseconds.
    Bounded(u32),
    Floor,
    Flock,
    Reference(u32),
}

/// The bounds of the bounded-waiting runs, in microseconds.
const BOUNDS_US: [u32; 2] = [10_000, 2000];

impl Kind {
    const ALL: [Kind; 7] = [
        Kind::Heldlock,
        Kind::Bounded(BOUNDS_US[0]),
        Kind::Bounded(BOUNDS_US[1]),
        Kind::Floor,
        Kind::Flock,
        Kind::Reference(50),
        Kind::Reference(1),
    ];

    fn args(self) -> Vec<String> {
        match self {
            Kind::Heldlock => vec!["heldlock".into()],
            Kind::Bounded(bound) => vec!["heldlock-bounded".into(), bound.to_string()],
            Kind::Floor => vec!["floor".into()],
            Kind::Flock => vec!["flock".into()],
            Kind::Reference(poll) => vec!["reference".into(), poll.to_string()],
        }
    }

    fn label(self) -> String {
        match self {
            Kind::Heldlock => "heldlock".into(),
            Kind::Bounded(bound) => format!("heldlock bounded {bound} us"),
            Kind::Floor => "floor".into(),
            Kind::Flock => "flock".into(),
            Kind::Reference(poll) => format!("reference {poll} ms"),
        }
    }

    fn file_stem(self) -> String {
        self.label().replace(' ', "-")
    }
}

fn epoch_ns() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    u64::try_from(since.as_nanos()).unwrap()
}

/// User + system seconds of all waited-for children (`cutime + cstime`).
fn children_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    // `rest` starts at field 3 (state); cutime and cstime are fields 16, 17.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[13].parse::<u64>().unwrap() + fields[14].parse::<u64>().unwrap();
    ticks as f64 / TICKS_PER_SECOND
}

/// A worker process; killed and reaped on drop unless it finished.
struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Worker {
    fn spawn(kind: Kind, job: &[&str]) -> Worker {
        let mut child = Command::new(WORKER)
            .args(kind.args())
            .args(job)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Worker {
            stdin: child.stdin.take(),
            child,
            lines,
        }
    }

    /// The worker's next line of output.
    fn line(&self) -> String {
        self.lines
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|e| panic!("worker {}: no output ({e})", self.child.id()))
    }

    fn go(&mut self) {
        let mut stdin = self.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
    }

    /// Waits for a successful exit.
    fn finish(mut self) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "worker {}: {status}", self.child.id());
                return;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "worker {} hung",
                self.child.id()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One acquisition, from a worker's log.
#[derive(Clone, Copy, Debug)]
struct Acquisition {
    worker: usize,
    call: u64,
    held: u64,
    cs_end: u64,
    released: u64,
    value: u64,
}

fn read_log(path: &Path, worker: usize) -> Vec<Acquisition> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let n: Vec<u64> = line.split(' ').map(|f| f.parse().unwrap()).collect();
            assert_eq!(n.len(), 5, "bad log line {line:?}");
            Acquisition {
                worker,
                call: n[0],
                held: n[1],
                cs_end: n[2],
                released: n[3],
                value: n[4],
            }
        })
        .collect()
}

/// The figures of one contended run.
#[derive(Clone, Debug)]
struct Contended {
    kind: Kind,
    processes: usize,
    /// Acquisitions (= increments) per second.
    rate: f64,
    /// The lowest and highest `rate` of the repeated runs.
    spread: (f64, f64),
    /// Acquisitions by another process than the previous one, per second.
    handoff_rate: f64,
    /// The share of acquisitions made by another process than the previous.
    fairness: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    /// p99 of the latency minus other processes' critical sections meanwhile.
    p99_beyond: Duration,
    /// Median critical section (the increment itself).
    cs: Duration,
    /// Median time from one critical section's end to the next one's start.
    gap: Duration,
    /// CPU seconds (all processes) per acquisition.
    cpu: f64,
    wall: Duration,
}

fn percentile(sorted: &[u64], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Duration::from_nanos(sorted[rank])
}

fn contended_run(dir: &Path, kind: Kind, processes: usize, increments: u32) -> Contended {
    let stem = format!("{}-{processes}", kind.file_stem());
    let lock = dir.join(format!("{stem}.lock"));
    let counter = dir.join(format!("{stem}.counter"));
    let _ = std::fs::remove_file(&counter);
    let logs: Vec<PathBuf> = (0..processes)
        .map(|i| dir.join(format!("{stem}.{i}.log")))
        .collect();
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let times = increments.to_string();

    let cpu_before = children_cpu();
    let mut workers: Vec<Worker> = logs
        .iter()
        .map(|log| Worker::spawn(kind, &["contend", &s(&lock), &s(&counter), &times, &s(log)]))
        .collect();
    for worker in &workers {
        assert_eq!(worker.line(), "ready");
    }
    workers.iter_mut().for_each(Worker::go);
    workers.into_iter().for_each(Worker::finish);
    let cpu = children_cpu() - cpu_before;

    let mut all: Vec<Acquisition> = logs
        .iter()
        .enumerate()
        .flat_map(|(i, log)| read_log(log, i))
        .collect();
    let total = all.len();
    assert_eq!(total, processes * increments as usize, "{stem}: log lines");
    let counter_text = std::fs::read_to_string(&counter).unwrap();
    let final_value: u64 = counter_text.split(' ').next().unwrap().parse().unwrap();
    assert_eq!(final_value, total as u64, "{stem}: an increment was lost");
    all.sort_by_key(|a| a.value);
    for (i, a) in all.iter().enumerate() {
        assert_eq!(
            a.value,
            i as u64 + 1,
            "{stem}: value written twice or never"
        );
    }
    for pair in all.windows(2) {
        assert!(
            pair[1].held >= pair[0].cs_end,
            "{stem}: critical sections overlap: {pair:?}"
        );
    }

    let first = all.iter().map(|a| a.call).min().unwrap();
    let last = all.iter().map(|a| a.released).max().unwrap();
    let wall = Duration::from_nanos(last - first);
    let handoffs = all
        .windows(2)
        .filter(|w| w[0].worker != w[1].worker)
        .count();

    // Latency beyond others' critical sections: the critical sections are
    // disjoint and sorted, so prefix sums give each wait's overlap quickly.
    let mut prefix = vec![0u64];
    for a in &all {
        prefix.push(prefix.last().unwrap() + (a.cs_end - a.held));
    }
    let overlap = |from: u64, to: u64| -> u64 {
        // Sections ending after `from` and starting before `to`.
        let lo = all.partition_point(|a| a.cs_end <= from);
        let hi = all.partition_point(|a| a.held < to);
        if lo >= hi {
            return 0;
        }
        let mut sum = prefix[hi] - prefix[lo];
        let (head, tail) = (&all[lo], &all[hi - 1]);
        sum -= from.saturating_sub(head.held).min(head.cs_end - head.held);
        sum -= tail.cs_end.saturating_sub(to).min(tail.cs_end - tail.held);
        sum
    };
    let mut latency: Vec<u64> = all.iter().map(|a| a.held - a.call).collect();
    let mut beyond: Vec<u64> = all
        .iter()
        .map(|a| (a.held - a.call).saturating_sub(overlap(a.call, a.held)))
        .collect();
    let mut cs: Vec<u64> = all.iter().map(|a| a.cs_end - a.held).collect();
    let mut gap: Vec<u64> = all.windows(2).map(|w| w[1].held - w[0].cs_end).collect();
    for v in [&mut latency, &mut beyond, &mut cs, &mut gap] {
        v.sort_unstable();
    }
    for log in &logs {
        let _ = std::fs::remove_file(log);
    }
    let seconds = wall.as_secs_f64();
    Contended {
        kind,
        processes,
        rate: total as f64 / seconds,
        spread: (total as f64 / seconds, total as f64 / seconds),
        handoff_rate: handoffs as f64 / seconds,
        fairness: handoffs as f64 / (total - 1) as f64,
        p50: percentile(&latency, 0.50),
        p99: percentile(&latency, 0.99),
        max: percentile(&latency, 1.0),
        p99_beyond: percentile(&beyond, 0.99),
        cs: percentile(&cs, 0.50),
        gap: percentile(&gap, 0.50),
        cpu: cpu / total as f64,
        wall,
    }
}

/// A holder running `job` on the lock `lock`, and a waiter that found it
/// busy and went to sleep on it after `sleep`.
fn holder_and_sleeping_waiter(
    kind: Kind,
    job: &str,
    lock: &str,
    sleep: Duration,
) -> (Worker, Worker) {
    let holder = Worker::spawn(kind, &[job, lock]);
    assert_eq!(holder.line(), "held");
    let waiter = Worker::spawn(kind, &["wait", lock]);
    assert_eq!(waiter.line(), "waiting");
    std::thread::sleep(sleep);
    (holder, waiter)
}

/// Time from SIGKILL of a holder to a waiting process holding the lock.
fn crash_takeover(dir: &Path, kind: Kind, round: usize) -> Duration {
    let lock = dir.join(format!("crash-{}-{round}.lock", kind.file_stem()));
    let lock = lock.to_str().unwrap();
    let (mut holder, waiter) =
        holder_and_sleeping_waiter(kind, "hold", lock, Duration::from_millis(150));
    assert!(
        matches!(holder.child.try_wait(), Ok(None)),
        "the holder died before it was killed"
    );
    let killed = epoch_ns();
    holder.child.kill().unwrap();
    let held: u64 = waiter.line().parse().unwrap();
    waiter.finish();
    let _ = holder.child.wait();
    let _ = std::fs::remove_file(lock);
    Duration::from_nanos(held.saturating_sub(killed))
}

/// Time from a holder's release call to a sleeping waiter holding the lock.
fn handover(dir: &Path, kind: Kind, round: usize) -> Duration {
    let lock = dir.join(format!("handover-{}-{round}.lock", kind.file_stem()));
    let lock = lock.to_str().unwrap();
    // A poll loop wakes on its own schedule: the rounds release at phases
    // spread evenly over 50 ms, or a release could land just after (or
    // before) the reference's poll every time.
    let phase = 50 * u64::try_from(round).unwrap() / u64::try_from(HANDOVER_REPEATS).unwrap();
    let (mut holder, waiter) =
        holder_and_sleeping_waiter(kind, "handover", lock, Duration::from_millis(150 + phase));
    holder.go();
    let released: u64 = holder.line().parse().unwrap();
    let held: u64 = waiter.line().parse().unwrap();
    holder.finish();
    waiter.finish();
    let _ = std::fs::remove_file(lock);
    Duration::from_nanos(held.saturating_sub(released))
}

/// Uncontended acquire + release pairs per second (one process).
fn pairs_per_second(dir: &Path, kind: Kind, pairs: u32) -> f64 {
    let lock = dir.join(format!("pairs-{}.lock", kind.file_stem()));
    let worker = Worker::spawn(kind, &["pairs", lock.to_str().unwrap(), &pairs.to_string()]);
    let nanos: u64 = worker.line().parse().unwrap();
    worker.finish();
    f64::from(pairs) / (nanos as f64 / 1e9)
}

/// Repeated timings of one kind, sorted.
struct Timings {
    kind: Kind,
    median: Duration,
    sorted: Vec<Duration>,
}

impl Timings {
    /// Runs `once(kind, round)` `repeats` times for each kind and prints a
    /// line per kind.
    fn measure(
        part: &str,
        what: &str,
        kinds: &[Kind],
        repeats: usize,
        once: impl Fn(Kind, usize) -> Duration,
    ) -> Vec<Timings> {
        kinds
            .iter()
            .map(|&kind| {
                let mut sorted: Vec<Duration> =
                    (0..repeats).map(|round| once(kind, round)).collect();
                sorted.sort();
                let timings = Timings {
                    kind,
                    median: sorted[sorted.len() / 2],
                    sorted,
                };
                println!(
                    "handoff/{part}/{}: {what} {} median of {} (min {}, max {})",
                    kind.label(),
                    ms(timings.median),
                    timings.sorted.len(),
                    ms(timings.sorted[0]),
                    ms(*timings.sorted.last().unwrap())
                );
                timings
            })
            .collect()
    }

    /// A Markdown table of `all`, one row per kind.
    fn table(w: &mut String, title: &str, all: &[Timings]) {
        writeln!(w, "\n| {title} | median | min | max |").unwrap();
        writeln!(w, "| --- | --- | --- | --- |").unwrap();
        for t in all {
            writeln!(
                w,
                "| {} | {} | {} | {} |",
                t.kind.label(),
                ms(t.median),
                ms(t.sorted[0]),
                ms(*t.sorted.last().unwrap())
            )
            .unwrap();
        }
    }
}

fn median_by<T: Clone>(mut runs: Vec<T>, key: impl Fn(&T) -> f64) -> T {
    runs.sort_by(|a, b| key(a).total_cmp(&key(b)));
    runs[runs.len() / 2].clone()
}

/// Uncontended, the reference never sleeps: its poll does not matter.
fn pairs_label(kind: Kind) -> String {
    match kind {
        Kind::Reference(_) => "reference".into(),
        _ => kind.label(),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

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

fn summary(
    contended: &[Contended],
    crash: &[Timings],
    handovers: &[Timings],
    uncontended: &[(Kind, f64)],
    workloads: &[(usize, u32)],
    elapsed: Duration,
) -> String {
    let get = |kind: Kind, p: usize| {
        contended
            .iter()
            .find(|r| r.kind == kind && r.processes == p)
            .unwrap()
    };
    let mut out = String::new();
    let w = &mut out;
    writeln!(w, "\n## hand-off summary\n").unwrap();
    writeln!(
        w,
        "| kind | P x K | acquisitions/s [runs] | hand-offs/s (share) | latency p50 / p99 / max | p99 beyond others' CS | gap p50 | CPU / acquisition |"
    )
    .unwrap();
    writeln!(w, "| --- | --- | --- | --- | --- | --- | --- | --- |").unwrap();
    for &(p, k) in workloads {
        for kind in Kind::ALL {
            let r = get(kind, p);
            writeln!(
                w,
                "| {} | {p} x {k} | {:.0} [{:.0}-{:.0}] | {:.0} ({:.2}) | {} / {} / {} | {} | {} | {} |",
                kind.label(),
                r.rate,
                r.spread.0,
                r.spread.1,
                r.handoff_rate,
                r.fairness,
                ms(r.p50),
                ms(r.p99),
                ms(r.max),
                ms(r.p99_beyond),
                us(r.gap),
                us(Duration::from_secs_f64(r.cpu)),
            )
            .unwrap();
        }
    }
    Timings::table(w, "crash takeover (SIGKILL -> waiter holds)", crash);
    Timings::table(
        w,
        "hand-over (release called -> sleeping waiter holds)",
        handovers,
    );
    let pair_rate = |kind: Kind| uncontended.iter().find(|(k, _)| *k == kind).unwrap().1;
    writeln!(
        w,
        "\n| uncontended | pairs/s | time per pair | time vs floor |"
    )
    .unwrap();
    writeln!(w, "| --- | --- | --- | --- |").unwrap();
    for (kind, rate) in uncontended {
        writeln!(
            w,
            "| {} | {rate:.0} | {} | {:.2}x |",
            pairs_label(*kind),
            us(Duration::from_secs_f64(1.0 / rate)),
            pair_rate(Kind::Floor) / rate
        )
        .unwrap();
    }

    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    writeln!(w, "\n| goal | measured | verdict |").unwrap();
    writeln!(w, "| --- | --- | --- |").unwrap();
    for &(p, _) in workloads {
        let h = get(Kind::Heldlock, p);
        let floor = get(Kind::Floor, p);
        let reference = get(Kind::Reference(50), p);
        let flock = get(Kind::Flock, p);
        let to_floor = h.rate / floor.rate;
        writeln!(
            w,
            "| P={p}: acquisitions/s >= 0.5x floor | {to_floor:.2}x (hand-offs/s: {:.2}x) | {} |",
            h.handoff_rate / floor.handoff_rate,
            verdict(to_floor >= 0.5)
        )
        .unwrap();
        let to_reference = h.rate / reference.rate;
        let handoffs_to_reference = h.handoff_rate / reference.handoff_rate;
        writeln!(
            w,
            "| P={p}: >= 20x reference at 50 ms | acquisitions/s {to_reference:.2}x, hand-offs/s {handoffs_to_reference:.1}x | acquisitions {}, hand-offs {} |",
            verdict(to_reference >= 20.0),
            verdict(handoffs_to_reference >= 20.0)
        )
        .unwrap();
        let cpu = h.cpu / floor.cpu;
        writeln!(
            w,
            "| P={p}: CPU per acquisition <= 2x floor | {cpu:.2}x | {} |",
            verdict(cpu <= 2.0)
        )
        .unwrap();
        for bound in BOUNDS_US {
            let b = get(Kind::Bounded(bound), p);
            let cost = 1.0 - b.rate / h.rate;
            writeln!(
                w,
                "| P={p}: bounded waiting at {bound} us costs < 10 % of acquisitions/s | {:.0} % ({:.0} vs {:.0}/s; hand-off share {:.2} vs {:.2}; p99 {} vs {}; max {} vs {}) | {} |",
                cost * 100.0,
                b.rate,
                h.rate,
                b.fairness,
                h.fairness,
                ms(b.p99),
                ms(h.p99),
                ms(b.max),
                ms(h.max),
                verdict(cost < 0.10)
            )
            .unwrap();
        }
        writeln!(
            w,
            "| P={p}: vs flock (no goal) | acquisitions/s {:.2}x, CPU {:.2}x | - |",
            h.rate / flock.rate,
            h.cpu / flock.cpu
        )
        .unwrap();
    }
    if let Some(h) = contended
        .iter()
        .find(|r| r.kind == Kind::Heldlock && r.processes == 4)
    {
        writeln!(
            w,
            "| P=4: p99 latency beyond critical sections < 5 ms | {} (raw p99 {}) | {} |",
            ms(h.p99_beyond),
            ms(h.p99),
            verdict(h.p99_beyond < Duration::from_millis(5))
        )
        .unwrap();
    }
    if let Some(&(p, _)) = workloads.iter().max_by_key(|(p, _)| *p) {
        let p99s: Vec<String> = [Kind::Heldlock]
            .into_iter()
            .chain(BOUNDS_US.map(Kind::Bounded))
            .map(|kind| format!("{} {}", kind.label(), ms(get(kind, p).p99)))
            .collect();
        let best = [Kind::Heldlock]
            .into_iter()
            .chain(BOUNDS_US.map(Kind::Bounded))
            .map(|kind| get(kind, p).p99)
            .min()
            .unwrap();
        writeln!(
            w,
            "| P={p}: p99 acquire latency < 2 ms (some mode) | {} | {} |",
            p99s.join(", "),
            verdict(best < Duration::from_millis(2))
        )
        .unwrap();
    }
    let handover_of = |kind: Kind| handovers.iter().find(|t| t.kind == kind).unwrap().median;
    let faster =
        handover_of(Kind::Reference(50)).as_secs_f64() / handover_of(Kind::Heldlock).as_secs_f64();
    writeln!(
        w,
        "| hand-over to a sleeping waiter >= 20x faster than reference at 50 ms | {faster:.0}x ({} vs {}) | {} |",
        ms(handover_of(Kind::Heldlock)),
        ms(handover_of(Kind::Reference(50))),
        verdict(faster.is_finite() && faster >= 20.0)
    )
    .unwrap();
    let takeover = crash[0].median;
    writeln!(
        w,
        "| same-host crash takeover < 10 ms median | {} | {} |",
        ms(takeover),
        verdict(takeover < Duration::from_millis(10))
    )
    .unwrap();
    let slower = pair_rate(Kind::Floor) / pair_rate(Kind::Heldlock);
    writeln!(
        w,
        "| uncontended within 1.5x of floor | {slower:.2}x the floor's time per pair | {} |",
        verdict(slower <= 1.5)
    )
    .unwrap();
    writeln!(
        w,
        "| uncontended vs flock (no goal) | {:.1}x flock's time per pair | - |",
        pair_rate(Kind::Flock) / pair_rate(Kind::Heldlock)
    )
    .unwrap();
    write!(w, "\nwhole run: {:.0} s", elapsed.as_secs_f64()).unwrap();
    out
}
