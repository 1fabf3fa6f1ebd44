//! Issue 16 item 4, judged within one run: `Serializer` at least as fast as
//! the tokio and async-lock maps in every case, timed in alternating rounds
//! (so that the machine's drift hits each implementation alike), and its
//! peak heap in the `join_all` cases no higher than the async-lock map's
//! (from the memory pass, when it ran).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    AsyncLockMap, KEYS, KeyedLock, Serializer, TokioMutexMap, current_thread, multi_thread,
    producers, spawn_all, submit_all,
};

/// Alternating rounds per case; the median is reported.
const ROUNDS: usize = 7;

/// The cases, by name.
const CASES: [&str; 5] = [
    "one_key",
    "thousand_keys",
    "eight_producers",
    "spawn_one_key",
    "spawn_thousand_keys",
];

/// One run of `case` on a fresh `L`, timed.
fn time<L: KeyedLock>(case: &str) -> Duration {
    let (single, multi) = (current_thread(), multi_thread());
    let lock = Arc::new(L::new());
    let started = Instant::now();
    match case {
        "one_key" => single.block_on(submit_all(&lock, 1)),
        "thousand_keys" => single.block_on(submit_all(&lock, KEYS)),
        "eight_producers" => multi.block_on(producers(&lock)),
        "spawn_one_key" => multi.block_on(spawn_all(&lock, 1)),
        "spawn_thousand_keys" => multi.block_on(spawn_all(&lock, KEYS)),
        other => panic!("no case {other}"),
    }
    started.elapsed()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort_unstable();
    times[times.len() / 2]
}

/// Prints the verdicts; `heaps` holds the memory pass's peaks as
/// `(implementation, case, bytes)`, empty when it did not run.
pub(super) fn report(heaps: &[(&'static str, &'static str, usize)]) {
    println!("\n## issue 16 item 4 goals, {ROUNDS} alternating rounds per case\n");
    println!(
        "| case | heldlock | tokio map | async-lock map | tokio map / heldlock | async-lock map / heldlock |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for case in CASES {
        let mut rounds: [Vec<Duration>; 3] = Default::default();
        // A warm-up round, not counted.
        let _ = (
            time::<Serializer<u64>>(case),
            time::<TokioMutexMap>(case),
            time::<AsyncLockMap>(case),
        );
        for _ in 0..ROUNDS {
            rounds[0].push(time::<Serializer<u64>>(case));
            rounds[1].push(time::<TokioMutexMap>(case));
            rounds[2].push(time::<AsyncLockMap>(case));
        }
        let [ours, tokio, async_lock] = rounds.map(median);
        let ratio = |theirs: Duration| theirs.as_secs_f64() / ours.as_secs_f64();
        let judged = |r: f64| format!("{r:.2}x {}", verdict(r >= 1.0));
        let ms = |t: Duration| format!("{:.2} ms", t.as_secs_f64() * 1e3);
        println!(
            "| {case} | {} | {} | {} | {} | {} |",
            ms(ours),
            ms(tokio),
            ms(async_lock),
            judged(ratio(tokio)),
            judged(ratio(async_lock)),
        );
    }
    let peak = |name: &str, case: &str| {
        heaps
            .iter()
            .find(|(n, c, _)| *n == name && *c == case)
            .map(|(_, _, bytes)| *bytes)
    };
    for case in ["one_key", "thousand_keys"] {
        match (
            peak(Serializer::<u64>::NAME, case),
            peak(AsyncLockMap::NAME, case),
        ) {
            (Some(ours), Some(theirs)) => println!(
                "| {case}: peak heap no higher than the async-lock map's | {:.1} vs {:.1} MiB {} |",
                mib(ours),
                mib(theirs),
                verdict(ours <= theirs)
            ),
            _ => println!(
                "SKIPPED {case} heap goal: the memory pass did not run (HELDLOCK_BENCH_NO_MEMORY)"
            ),
        }
    }
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn verdict(met: bool) -> &'static str {
    if met { "(met)" } else { "(**missed**)" }
}
