//! The contended part: P processes each doing K read-modify-write
//! increments of a counter file under the lock, checked (the counter is
//! P x K, every value written exactly once, critical sections never
//! overlap) and measured from the workers' logs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::stats::percentile;
use crate::worker::{Kind, Worker};

/// Contended runs per (kind, P); the median by throughput is reported.
pub(crate) const REPEATS: usize = 5;
/// Kernel clock ticks per second (`USER_HZ`) for `/proc` CPU times.
const TICKS_PER_SECOND: f64 = 100.0;

/// User + system seconds of all waited-for children (`cutime + cstime`).
fn children_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    // `rest` starts at field 3 (state); cutime and cstime are fields 16, 17.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[13].parse::<u64>().unwrap() + fields[14].parse::<u64>().unwrap();
    ticks as f64 / TICKS_PER_SECOND
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
pub(crate) struct Contended {
    pub(crate) kind: Kind,
    pub(crate) processes: usize,
    /// Acquisitions (= increments) per second.
    pub(crate) rate: f64,
    /// The lowest and highest `rate` of the repeated runs.
    pub(crate) spread: (f64, f64),
    /// Acquisitions by another process than the previous one, per second.
    pub(crate) handoff_rate: f64,
    /// The share of acquisitions made by another process than the previous.
    pub(crate) fairness: f64,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) max: Duration,
    /// p99 of the latency minus other processes' critical sections meanwhile.
    pub(crate) p99_beyond: Duration,
    /// Median critical section (the increment itself).
    pub(crate) cs: Duration,
    /// Median time from one critical section's end to the next one's start.
    pub(crate) gap: Duration,
    /// CPU seconds (all processes) per acquisition.
    pub(crate) cpu: f64,
    pub(crate) wall: Duration,
}

pub(crate) fn contended_run(
    dir: &Path,
    kind: Kind,
    processes: usize,
    increments: u32,
) -> Contended {
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
