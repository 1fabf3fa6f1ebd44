//! Issue 16's uncontended goals, judged within one run: every case timed in
//! alternating rounds (so that the machine's drift hits them alike), the
//! median round per case, and each ratio printed with its verdict.
//!
//! * the acquire + release pair, one `FileLock` and a new one per pair
//!   (current-thread and multi-thread runtime): within 1.25x of heldlock's
//!   protocol floor and 2x of the reference protocol's;
//! * the pair with a new `FileLock` beside 10,000 and 1,000,000 other
//!   files: within 1.1x of the same in an empty directory;
//! * a whole `heldlock run L -- true` against `flock L true`: within 1.2x.
//!   The `heldlock` executables come from `HELDLOCK_BENCH_CLI` (the
//!   ordinary build) and `HELDLOCK_BENCH_CLI_STATIC` (`cargo xtask dist`),
//!   which `cargo xtask bench lock` sets; a case without its executable is
//!   reported as `SKIPPED`, never as met.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use heldlock_tests::floor::{Floor, ReferenceFloor, fill_dir};

use super::{current_thread, new_lock_pair, options, record};

/// Alternating rounds per case; the median is reported.
const ROUNDS: usize = 9;
/// Pairs per round.
const PAIRS: u32 = 2_000;
/// Whole `heldlock run` / `flock` processes per case.
const PROCESSES: usize = 150;

type Case<'a> = (&'static str, Box<dyn FnMut() + 'a>);

pub(super) fn report(dir: &Path) {
    let runtime = current_thread();
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let lock = heldlock_tokio::FileLock::new(dir.join("goals-heldlock.lock"), options()).unwrap();
    let new_path = dir.join("goals-new.lock");
    let mt_path = dir.join("goals-new-mt.lock");
    let mut floor = Floor::new(&dir.join("goals-floor.lock"), record());
    let mut reference = ReferenceFloor::new(&dir.join("goals-reference.lock"), record());
    let cases: Vec<Case<'_>> = vec![
        (
            "one FileLock",
            Box::new(|| {
                runtime.block_on(async {
                    let held = lock.acquire().await.unwrap();
                    held.release().await.unwrap();
                })
            }),
        ),
        (
            "a new FileLock per pair",
            Box::new(|| new_lock_pair(&runtime, &new_path)),
        ),
        (
            "a new FileLock per pair, multi-thread runtime",
            Box::new(|| new_lock_pair(&multi, &mt_path)),
        ),
        (
            "heldlock's floor",
            Box::new(|| {
                assert!(floor.try_acquire().unwrap());
                floor.release().unwrap();
            }),
        ),
        (
            "the reference's floor",
            Box::new(|| {
                assert!(reference.try_acquire().unwrap());
                reference.release().unwrap();
            }),
        ),
    ];
    let per_pair = alternate(cases, ROUNDS, |run| {
        let started = Instant::now();
        for _ in 0..PAIRS {
            run();
        }
        started.elapsed() / PAIRS
    });
    let (own, theirs) = (per_pair[3], per_pair[4]);
    println!("\n## issue 16 goals (uncontended), {ROUNDS} alternating rounds of {PAIRS} pairs\n");
    println!(
        "| case | median per pair | vs heldlock's floor (goal 1.25x) | vs the reference's floor (goal 2x) |"
    );
    println!("| --- | --- | --- | --- |");
    let labels = [
        "one FileLock",
        "a new FileLock per pair",
        "a new FileLock per pair, multi-thread runtime",
    ];
    for (label, time) in labels.iter().zip(&per_pair) {
        let (to_own, to_theirs) = (ratio(*time, own), ratio(*time, theirs));
        println!(
            "| {label} | {:.2} µs | {to_own:.2}x {} | {to_theirs:.2}x {} |",
            micros(*time),
            verdict(to_own <= 1.25),
            verdict(to_theirs <= 2.0)
        );
    }
    println!(
        "| floors | heldlock's {:.2} µs, the reference's {:.2} µs | | |",
        micros(own),
        micros(theirs)
    );
    directory(dir);
    cli(dir);
}

/// The pair with a new `FileLock` in an empty directory and beside 10,000
/// and 1,000,000 other files, all three directories there at once so that
/// their rounds can alternate.
fn directory(dir: &Path) {
    const ENTRIES: [u32; 3] = [0, 10_000, 1_000_000];
    let runtime = current_thread();
    let cases: Vec<tempfile::TempDir> = ENTRIES
        .iter()
        .map(|&entries| {
            let case = tempfile::tempdir_in(dir).unwrap();
            fill_dir(case.path(), entries).unwrap();
            case
        })
        .collect();
    let runs: Vec<Case<'_>> = cases
        .iter()
        .map(|case| {
            let path = case.path().join("heldlock.lock");
            let runtime = &runtime;
            let run: Box<dyn FnMut()> = Box::new(move || new_lock_pair(runtime, &path));
            ("", run)
        })
        .collect();
    let per_pair = alternate(runs, ROUNDS, |run| {
        let started = Instant::now();
        for _ in 0..PAIRS {
            run();
        }
        started.elapsed() / PAIRS
    });
    println!(
        "\n## issue 16 goal (no cost that grows with the directory), {ROUNDS} alternating rounds of {PAIRS} pairs\n"
    );
    println!(
        "| other files beside the lock | median per pair (a new FileLock) | vs the empty directory (goal 1.1x) |"
    );
    println!("| --- | --- | --- |");
    for (entries, time) in ENTRIES.iter().zip(&per_pair) {
        let to_empty = ratio(*time, per_pair[0]);
        let judged = if *entries == 0 {
            ""
        } else {
            verdict(to_empty <= 1.1)
        };
        println!(
            "| {entries} | {:.2} µs | {to_empty:.2}x {judged} |",
            micros(*time)
        );
    }
    for case in cases {
        case.close().unwrap();
    }
}

/// `heldlock run L -- true` against `flock L true`, whole processes.
fn cli(dir: &Path) {
    let executable = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_file())
    };
    let builds: Vec<(&str, PathBuf)> = [
        ("heldlock run", "HELDLOCK_BENCH_CLI"),
        ("heldlock run, static build", "HELDLOCK_BENCH_CLI_STATIC"),
    ]
    .into_iter()
    .filter_map(|(label, var)| match executable(var) {
        Some(path) => Some((label, path)),
        None => {
            println!("SKIPPED {label} vs flock: {var} names no executable (cargo xtask bench lock sets it)");
            None
        }
    })
    .collect();
    if builds.is_empty() || Command::new("flock").arg("--version").output().is_err() {
        println!("SKIPPED the CLI goal: no heldlock executable, or no flock(1) here");
        return;
    }
    let lock = dir.join("goals-cli.lock");
    let flock_file = dir.join("goals-flock");
    let mut cases: Vec<Case<'_>> = builds
        .iter()
        .map(|(label, path)| {
            let lock = lock.clone();
            let run: Box<dyn FnMut()> = Box::new(move || {
                let status = Command::new(path)
                    .arg("run")
                    .arg(&lock)
                    .args(["--", "true"])
                    .stdout(Stdio::null())
                    .status()
                    .unwrap();
                assert!(status.success(), "{label}: {status}");
            });
            (*label, run)
        })
        .collect();
    cases.push((
        "flock",
        Box::new(|| {
            let status = Command::new("flock")
                .arg(&flock_file)
                .arg("true")
                .status()
                .unwrap();
            assert!(status.success(), "flock: {status}");
        }),
    ));
    let labels: Vec<&str> = cases.iter().map(|(label, _)| *label).collect();
    let times = alternate(cases, PROCESSES, |run| {
        let started = Instant::now();
        run();
        started.elapsed()
    });
    let flock = times[times.len() - 1];
    println!("\n## issue 16 goal (the CLI), {PROCESSES} alternating rounds\n");
    println!("| command | median | vs `flock L true` (goal 1.2x) |");
    println!("| --- | --- | --- |");
    for (label, time) in labels.iter().zip(&times) {
        let to_flock = ratio(*time, flock);
        let judged = if *label == "flock" {
            String::new()
        } else {
            verdict(to_flock <= 1.2).to_owned()
        };
        println!(
            "| {label} | {:.3} ms | {to_flock:.2}x {judged} |",
            time.as_secs_f64() * 1e3
        );
    }
}

/// Runs every case `rounds` times, one round of each in turn, and returns
/// each case's median of what `measure` returned for its rounds.
fn alternate(
    mut cases: Vec<Case<'_>>,
    rounds: usize,
    mut measure: impl FnMut(&mut dyn FnMut()) -> Duration,
) -> Vec<Duration> {
    // A warm-up round, not counted.
    for (_, run) in &mut cases {
        run();
    }
    let mut samples = vec![Vec::with_capacity(rounds); cases.len()];
    for _ in 0..rounds {
        for ((_, run), times) in cases.iter_mut().zip(&mut samples) {
            times.push(measure(run.as_mut()));
        }
    }
    samples
        .into_iter()
        .map(|mut times| {
            times.sort_unstable();
            times[times.len() / 2]
        })
        .collect()
}

fn ratio(time: Duration, base: Duration) -> f64 {
    time.as_secs_f64() / base.as_secs_f64()
}

fn micros(time: Duration) -> f64 {
    time.as_secs_f64() * 1e6
}

fn verdict(met: bool) -> &'static str {
    if met { "(met)" } else { "(**missed**)" }
}
