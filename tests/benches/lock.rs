//! `cargo xtask bench lock`: the held file lock, in one run, on tmpfs
//! (`/dev/shm` when it is there, else the system temporary directory).
//!
//! Uncontended, with criterion (one acquire + release pair per iteration):
//! * `heldlock`: `FileLock` on a current-thread tokio runtime (the whole
//!   stack: core machine, record, heartbeat task spawned and stopped);
//! * `protocol_floor`: the same protocol's bare syscall sequence (what
//!   `FsBackend` issues for one create and one release, see
//!   `heldlock_tests::floor`), no logic;
//! * `flock`: `File::lock` + `File::unlock` on an open file (the kernel's lock).
//!
//! Contended, with real processes (`heldlock-test-worker increment`): P = 2, 4
//! and 8 processes each do K read-modify-write increments of a counter file
//! under the lock; reported as increments per second under contention (median
//! of 3 runs, process start-up included), at a 1 ms poll and at the
//! reference's default 50 ms poll. A releasing process often takes the lock
//! straight back while the others sleep out their poll, so this is throughput,
//! not fairness. The counter is checked to be exactly P x K.
#![allow(missing_docs, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, Throughput};
use heldlock_core::LockOptions;
use heldlock_tests::floor::{Floor, bench_dir};
use heldlock_tokio::TokioRuntime;

const WORKER: &str = env!("CARGO_BIN_EXE_heldlock-test-worker");

fn uncontended(c: &mut Criterion, dir: &Path) {
    let mut group = c.benchmark_group("lock/uncontended");
    group.throughput(Throughput::Elements(1));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let lock = heldlock_fs::FileLock::<TokioRuntime>::new(
        dir.join("heldlock.lock"),
        LockOptions::new(Duration::from_secs(30)),
    )
    .unwrap();
    group.bench_function("heldlock", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let held = lock.acquire().await.unwrap();
                held.release().await.unwrap();
            })
        })
    });

    let record = format!(
        "{} 0b1f3c9e-8a57-4f43-9a0e-5b7c4d2e1f00 {}\n",
        std::process::id(),
        humantime::format_rfc3339_millis(SystemTime::now())
    );
    let mut floor = Floor::new(&dir.join("floor.lock"), record.into_bytes());
    group.bench_function("protocol_floor", |b| {
        b.iter(|| {
            assert!(floor.try_acquire().unwrap());
            floor.release().unwrap();
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

fn main() {
    let dir = bench_dir().unwrap();
    println!("lock benchmarks in {}", dir.path().display());
    let mut c = Criterion::default().configure_from_args();
    uncontended(&mut c, dir.path());
    c.final_summary();
    if std::env::args().any(|a| a == "--bench") {
        contended(dir.path());
    }
}
