//! `cargo xtask bench lock`: the held file lock, in one run, on tmpfs
//! (`/dev/shm` when it is there, else the system temporary directory; set
//! `HELDLOCK_BENCH_IN` to a directory to measure on its file system instead).
//!
//! Uncontended, with criterion (one acquire + release pair per iteration):
//! * `heldlock`: one `FileLock` on a current-thread tokio runtime, reused for
//!   every pair (the whole stack: core machine, record, heartbeat task
//!   spawned and stopped);
//! * `heldlock_new`: a new `FileLock` per pair, as a caller that makes one
//!   per call does (the reference's usage), same runtime;
//! * `heldlock_new_mt`: the same on a multi-thread tokio runtime with one
//!   worker, each pair driven by `block_on` from outside the runtime, so that
//!   the heartbeat task runs on another thread;
//! * `protocol_floor`: heldlock's protocol as its bare system calls (13: what
//!   `FsBackend` issues for one create and one release, see
//!   `heldlock_tests::floor`), no logic;
//! * `reference_floor`: the reference's protocol as its bare system calls (7);
//! * `flock`: `File::lock` + `File::unlock` on an open file (the kernel's lock).
//!
//! Then `lock/directory/{0,10000,1000000}_entries`: `heldlock_new` with that
//! many other files beside the lock (made once per case with one `open` +
//! `close` each, and removed after it).
//!
//! Contended, with real processes (`heldlock-test-worker increment`): P = 2, 4
//! and 8 processes each do K read-modify-write increments of a counter file
//! under the lock; reported as increments per second under contention (median
//! of 3 runs, process start-up included), at a 1 ms poll and at the
//! reference's default 50 ms poll. A releasing process often takes the lock
//! straight back while the others sleep out their poll, so this is throughput,
//! not fairness. The counter is checked to be exactly P x K.
//!
//! Last, `lock/goals` (see `lock/goals.rs`): issue 16's uncontended goals and
//! the CLI's against `flock`, each ratio measured in alternating rounds of
//! one run and printed with its verdict.
#![allow(missing_docs, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, Throughput};
use heldlock_core::LockOptions;
use heldlock_tests::floor::{Floor, ReferenceFloor, bench_dir, fill_dir};
use heldlock_tokio::{FileLock, TokioRuntime};

#[path = "lock/goals.rs"]
mod goals;

const WORKER: &str = env!("CARGO_BIN_EXE_heldlock-test-worker");

fn options() -> LockOptions {
    LockOptions::new(Duration::from_secs(30))
}

/// One pair with a new `FileLock`, as `block_on` from outside `runtime`.
fn new_lock_pair(runtime: &tokio::runtime::Runtime, path: &Path) {
    runtime.block_on(async {
        let lock = FileLock::new(path, options()).unwrap();
        let held = lock.acquire().await.unwrap();
        held.release().await.unwrap();
    })
}

/// A record as long as heldlock's, for the floors to write.
fn record() -> Vec<u8> {
    format!(
        "{} 0b1f3c9e-8a57-4f43-9a0e-5b7c4d2e1f00 {}\n",
        std::process::id(),
        humantime::format_rfc3339_millis(SystemTime::now())
    )
    .into_bytes()
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn uncontended(c: &mut Criterion, dir: &Path) {
    let mut group = c.benchmark_group("lock/uncontended");
    group.throughput(Throughput::Elements(1));

    let runtime = current_thread();
    let lock =
        heldlock_fs::FileLock::<TokioRuntime>::new(dir.join("heldlock.lock"), options()).unwrap();
    group.bench_function("heldlock", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let held = lock.acquire().await.unwrap();
                held.release().await.unwrap();
            })
        })
    });

    let path = dir.join("heldlock-new.lock");
    group.bench_function("heldlock_new", |b| {
        b.iter(|| new_lock_pair(&runtime, &path))
    });

    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let path = dir.join("heldlock-new-mt.lock");
    group.bench_function("heldlock_new_mt", |b| {
        b.iter(|| new_lock_pair(&multi, &path))
    });
    drop(multi);

    let mut floor = Floor::new(&dir.join("floor.lock"), record());
    group.bench_function("protocol_floor", |b| {
        b.iter(|| {
            assert!(floor.try_acquire().unwrap());
            floor.release().unwrap();
        })
    });

    let mut reference = ReferenceFloor::new(&dir.join("reference.lock"), record());
    group.bench_function("reference_floor", |b| {
        b.iter(|| {
            assert!(reference.try_acquire().unwrap());
            reference.release().unwrap();
        })
    });

    let file = std::fs::File::create(dir.join("flock.lock")).unwrap();
    group.bench_function("flock", |b| {
        b.iter(|| {
            file.lock().unwrap();
            file.unlock().unwrap();
        })
    });
    group.finish();
}

/// The uncontended pair with a new `FileLock` each time, beside 0, 10,000
/// and 1,000,000 other files: no step of an acquisition may cost in
/// proportion to the directory.
fn directory(c: &mut Criterion, dir: &Path) {
    let mut group = c.benchmark_group("lock/directory");
    group.throughput(Throughput::Elements(1));
    let runtime = current_thread();
    for entries in [0, 10_000, 1_000_000] {
        let name = format!("{entries}_entries");
        if !selected(&format!("lock/directory/{name}")) {
            continue;
        }
        let case = tempfile::tempdir_in(dir).unwrap();
        let filled = Instant::now();
        fill_dir(case.path(), entries).unwrap();
        println!(
            "lock/directory: {entries} other files made in {:.2} s",
            filled.elapsed().as_secs_f64()
        );
        let path = case.path().join("heldlock.lock");
        group.bench_function(name, |b| b.iter(|| new_lock_pair(&runtime, &path)));
        let removed = Instant::now();
        case.close().unwrap();
        println!(
            "lock/directory: {entries} other files removed in {:.2} s",
            removed.elapsed().as_secs_f64()
        );
    }
    group.finish();
}

/// Runs P workers doing K increments each; returns hand-offs per second.
fn contended_run(dir: &Path, processes: u32, increments: u32, poll_ms: u32) -> f64 {
    let lock = dir.join(format!("contended-{processes}-{poll_ms}.lock"));
    let counter = dir.join(format!("counter-{processes}-{poll_ms}"));
    let _ = std::fs::remove_file(&counter);
    let arg = |p: &PathBuf| p.to_str().unwrap().to_string();
    let started = Instant::now();
    let workers: Vec<_> = (0..processes)
        .map(|_| {
            Command::new(WORKER)
                .args(["increment", &arg(&lock), &arg(&counter)])
                .args([increments.to_string(), "30000".into(), poll_ms.to_string()])
                .spawn()
                .unwrap()
        })
        .collect();
    for mut worker in workers {
        assert!(worker.wait().unwrap().success());
    }
    let elapsed = started.elapsed();
    let total: u64 = std::fs::read_to_string(&counter)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        total,
        u64::from(processes * increments),
        "an increment was lost"
    );
    f64::from(processes * increments) / elapsed.as_secs_f64()
}

fn contended(dir: &Path) {
    for (poll_ms, increments) in [(1, 200), (50, 100)] {
        for processes in [2, 4, 8] {
            let mut runs: Vec<f64> = (0..3)
                .map(|_| contended_run(dir, processes, increments, poll_ms))
                .collect();
            runs.sort_by(f64::total_cmp);
            println!(
                "lock/contended/poll_{poll_ms}ms/{processes}_processes: {:.0} increments/s (median of 3; {} x {increments} increments each run)",
                runs[1], processes
            );
        }
    }
}

/// Whether criterion's command line (a filter, if any) selects the case
/// `id`, so that a million files are not made for a case that is skipped.
/// A filter that is not a plain substring selects everything.
fn selected(id: &str) -> bool {
    const VALUED: [&str; 9] = [
        "--profile-time",
        "--measurement-time",
        "--warm-up-time",
        "--sample-size",
        "--save-baseline",
        "--baseline",
        "--output-format",
        "--color",
        "--noise-threshold",
    ];
    let mut args = std::env::args().skip(1);
    let mut filters = Vec::new();
    while let Some(arg) = args.next() {
        if VALUED.contains(&arg.as_str()) {
            args.next();
        } else if !arg.starts_with('-') {
            filters.push(arg);
        }
    }
    let plain = |f: &str| f.chars().all(|c| c.is_alphanumeric() || "/_-".contains(c));
    filters.is_empty() || filters.iter().any(|f| !plain(f) || id.contains(f.as_str()))
}

fn main() {
    let dir = bench_dir().unwrap();
    println!("lock benchmarks in {}", dir.path().display());
    let mut c = Criterion::default().configure_from_args();
    uncontended(&mut c, dir.path());
    directory(&mut c, dir.path());
    c.final_summary();
    let full = std::env::args().any(|a| a == "--bench");
    if full && selected("lock/contended/") {
        contended(dir.path());
    }
    if full && selected("lock/goals") {
        goals::report(dir.path());
    }
}
