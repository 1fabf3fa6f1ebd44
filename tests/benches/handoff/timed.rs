//! The parts timed one event at a time: crash recovery (SIGKILL of a
//! holder -> a waiter holds), hand-over (release called -> a sleeping
//! waiter holds), and uncontended acquire + release pairs.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::stats::ms;
use crate::worker::{Kind, Worker, epoch_ns};

/// Kills per kind in the crash-recovery part.
pub(crate) const CRASH_REPEATS: usize = 7;
/// Hand-overs measured per kind (the reference's wait is spread over its
/// poll: more rounds for a steady median).
pub(crate) const HANDOVER_REPEATS: usize = 11;

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
pub(crate) fn crash_takeover(dir: &Path, kind: Kind, round: usize) -> Duration {
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
pub(crate) fn handover(dir: &Path, kind: Kind, round: usize) -> Duration {
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
pub(crate) fn pairs_per_second(dir: &Path, kind: Kind, pairs: u32) -> f64 {
    let lock = dir.join(format!("pairs-{}.lock", kind.file_stem()));
    let worker = Worker::spawn(kind, &["pairs", lock.to_str().unwrap(), &pairs.to_string()]);
    let nanos: u64 = worker.line().parse().unwrap();
    worker.finish();
    f64::from(pairs) / (nanos as f64 / 1e9)
}

/// Repeated timings of one kind, sorted.
pub(crate) struct Timings {
    pub(crate) kind: Kind,
    pub(crate) median: Duration,
    pub(crate) sorted: Vec<Duration>,
}

impl Timings {
    /// Runs `once(kind, round)` `repeats` times for each kind and prints a
    /// line per kind.
    pub(crate) fn measure(
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
    pub(crate) fn table(w: &mut String, title: &str, all: &[Timings]) {
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
