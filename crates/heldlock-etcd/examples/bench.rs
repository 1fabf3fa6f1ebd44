//! Latency and throughput of `EtcdLock` against a running etcd (it starts
//! none): the figures of `docs/benchmarks.md`, section "etcd (local single
//! node)".
//!
//! ```sh
//! etcd --data-dir "$(mktemp -d)" --listen-client-urls http://127.0.0.1:23790 \
//!      --advertise-client-urls http://127.0.0.1:23790 --listen-peer-urls http://127.0.0.1:23800 &
//! HELDLOCK_ETCD_ENDPOINTS=http://127.0.0.1:23790 cargo run --release -p heldlock-etcd --example bench
//! # or: cargo run --release -p heldlock-etcd --example bench -- http://127.0.0.1:23790
//! ```
//!
//! The endpoints (comma-separated) come from the first argument, else from
//! `HELDLOCK_ETCD_ENDPOINTS`. `BENCH_PAIRS` (default 2000) and
//! `BENCH_SECONDS` (default 5) size the two parts:
//!
//! * uncontended: `BENCH_PAIRS` sequential acquire + release pairs of one
//!   key on one `EtcdLock`; median, p90 and p99 per pair;
//! * contended: P = 2, 4, 8 tokio tasks, each with a lock of its own over a
//!   connection of its own, loop acquire -> release on one key for
//!   `BENCH_SECONDS`; acquisitions/s, hand-offs/s (acquisitions by another
//!   task than the previous holder) and acquire latency p50 / p99. Two
//!   kinds: `EtcdLock` (the tasks first queue among themselves in the
//!   process, as `EtcdLock` always does), and the core's `Lock` over an
//!   `EtcdBackend` without that queue, as P processes with one waiter each
//!   would contend (every waiter watches the key).
//!
//! Every lock has stale 10 s (the lease's TTL) and poll 20 ms (the watch
//! wakes waiters; the poll is a safety net). Keys are under
//! `heldlock-bench/<pid>/`; every lock is released, so none is left behind.
//! A failed request ends the run with a message and exit status 1.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use heldlock_core::{Lock, LockOptions};
use heldlock_etcd::{EtcdBackend, EtcdLock};
use heldlock_tokio::TokioRuntime;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench: {error}");
            // Causes that the message above does not already quote.
            let (mut shown, mut source) = (error.to_string(), error.source());
            while let Some(cause) = source {
                let text = cause.to_string();
                if !shown.contains(&text) {
                    eprintln!("  caused by: {text}");
                }
                (shown, source) = (text, cause.source());
            }
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), BoxError> {
    let list = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("HELDLOCK_ETCD_ENDPOINTS").ok())
        .ok_or("no endpoints: pass http://host:port or set HELDLOCK_ETCD_ENDPOINTS")?;
    let endpoints: Vec<String> = list.split(',').map(|e| e.trim().to_owned()).collect();
    let pairs: usize = number("BENCH_PAIRS", 2000)?;
    let seconds = number("BENCH_SECONDS", 5)?;
    let prefix = format!("heldlock-bench/{}", std::process::id());
    println!("etcd at {list}; stale 10 s, poll 20 ms");

    // Uncontended: one lock, one task, after a short warm-up.
    let lock =
        EtcdLock::<TokioRuntime>::connect(&endpoints, format!("{prefix}/alone"), options()).await?;
    let mut times = Vec::with_capacity(pairs);
    for i in 0..pairs + 50 {
        let started = Instant::now();
        lock.acquire().await?.release().await?;
        if i >= 50 {
            times.push(started.elapsed());
        }
    }
    times.sort();
    let total: Duration = times.iter().sum();
    println!(
        "uncontended, {pairs} pairs: median {}, p90 {}, p99 {}, max {} ({:.0} pairs/s)",
        show(pct(&times, 0.5)),
        show(pct(&times, 0.9)),
        show(pct(&times, 0.99)),
        show(pct(&times, 1.0)),
        pairs as f64 / total.as_secs_f64()
    );

    // Contended: P tasks on one key for a fixed time.
    for queued in [true, false] {
        for tasks in [2, 4, 8] {
            let key = format!(
                "{prefix}/p{tasks}-{}",
                if queued { "queued" } else { "watch" }
            );
            let mut locks = Vec::with_capacity(tasks);
            for _ in 0..tasks {
                let backend = EtcdBackend::connect(&endpoints, key.clone()).await?;
                locks.push(if queued {
                    EtcdLock::<TokioRuntime>::new(backend, options())?
                        .as_lock()
                        .clone()
                } else {
                    Lock::new(Arc::new(backend), Arc::new(TokioRuntime), options())?
                });
            }
            let last = Arc::new(AtomicUsize::new(usize::MAX));
            let handoffs = Arc::new(AtomicUsize::new(0));
            let start = Instant::now();
            let deadline = start + Duration::from_secs(seconds);
            let workers: Vec<_> = locks
                .into_iter()
                .enumerate()
                .map(|(id, lock)| {
                    let (last, handoffs) = (Arc::clone(&last), Arc::clone(&handoffs));
                    tokio::spawn(async move {
                        let mut waits = Vec::new();
                        while Instant::now() < deadline {
                            let called = Instant::now();
                            let held = lock.acquire().await?;
                            waits.push(called.elapsed());
                            // Under the lock: the previous holder is exact.
                            let before = last.swap(id, Ordering::Relaxed);
                            if before != id && before != usize::MAX {
                                handoffs.fetch_add(1, Ordering::Relaxed);
                            }
                            held.release().await?;
                        }
                        Ok::<_, heldlock_core::Error>(waits)
                    })
                })
                .collect();
            let mut waits = Vec::new();
            for worker in workers {
                waits.extend(worker.await??);
            }
            let elapsed = start.elapsed().as_secs_f64();
            waits.sort();
            let handoffs = handoffs.load(Ordering::Relaxed);
            println!(
                "contended, {} P={tasks}: {:.0} acquisitions/s, {:.0} hand-offs/s (share {:.2}), acquire p50 {}, p99 {}, max {}",
                if queued {
                    "EtcdLock (in-process queue)"
                } else {
                    "Lock, no queue (as processes)"
                },
                waits.len() as f64 / elapsed,
                handoffs as f64 / elapsed,
                handoffs as f64 / waits.len().max(1) as f64,
                show(pct(&waits, 0.5)),
                show(pct(&waits, 0.99)),
                show(pct(&waits, 1.0)),
            );
        }
    }
    Ok(())
}

/// Every lock's options: stale 10 s, poll 20 ms, no waiter gives up.
fn options() -> LockOptions {
    LockOptions::new(Duration::from_secs(10))
        .poll(Duration::from_millis(20))
        .max_wait(Duration::from_secs(120))
}

/// The environment variable `name` as a number, else `default`.
fn number<T: std::str::FromStr>(name: &str, default: T) -> Result<T, BoxError> {
    match std::env::var(name) {
        Ok(text) => Ok(text
            .parse()
            .map_err(|_| format!("{name}={text} is not a number"))?),
        Err(_) => Ok(default),
    }
}

/// The `q` quantile (nearest rank) of sorted `times`; zero when empty.
fn pct(times: &[Duration], q: f64) -> Duration {
    if times.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((times.len() as f64 * q).ceil() as usize).clamp(1, times.len());
    times[rank - 1]
}

/// A duration in µs below 1 ms, else in ms.
fn show(time: Duration) -> String {
    if time < Duration::from_millis(1) {
        format!("{} µs", time.as_micros())
    } else {
        format!("{:.2} ms", time.as_secs_f64() * 1e3)
    }
}
