//! `heldlock-chaos`: real processes, real `SIGKILL`s and `SIGSTOP`s, one
//! lock file, and an exact account of every increment afterwards.
//!
//! ```text
//! cargo run -p heldlock-tests --bin heldlock-chaos -- [--processes N] [--seconds S]
//!     [--stale-ms MS] [--poll-ms MS] [--max-pause-ms MS] [--takeover-slack-ms MS]
//!     [--lease-only] [--seed N] [--dir PATH] [--keep]
//! cargo run -p heldlock-tests --bin heldlock-chaos -- --long-pause [--stale-ms MS]
//!     [--poll-ms MS] [--lease-only] [--dir PATH] [--keep]
//! cargo run -p heldlock-tests --bin heldlock-chaos -- --cli [--heldlock PATH]
//!     [--linger-one-in N] [--processes N] [--seconds S] [--stale-ms MS] [--poll-ms MS]
//!     [--max-pause-ms MS] [--seed N] [--dir PATH] [--keep]
//! ```
//!
//! | flag | default | meaning |
//! | --- | --- | --- |
//! | `--processes N` | 4 | worker processes contending on the lock |
//! | `--seconds S` | 30 | how long signals are sent (decimals allowed) |
//! | `--stale-ms MS` | 1000 | the lock's `stale`; the heartbeat is the default for it |
//! | `--poll-ms MS` | 10 | the workers' `poll` |
//! | `--max-pause-ms MS` | 2/3 of `stale - heartbeat` | longest `SIGSTOP` pause; must stay below `stale - heartbeat` |
//! | `--takeover-slack-ms MS` | 2000 | allowance for scheduling above `stale + poll` when checking takeovers |
//! | `--lease-only` | off | workers use a bare `heldlock_core::Lock` over `FsBackend`, without `FileLock`'s same-host liveness probe, so a killed holder's lock is taken over only once it is stale |
//! | `--seed N` | from the clock | the schedule's random seed (printed) |
//! | `--dir PATH` | a new temporary directory | where the lock, the counter and the logs live |
//! | `--keep` | off | keep the directory after a passing run (a failing run always keeps it) |
//! | `--long-pause` | off | run the second mode instead (below) |
//! | `--cli` | off | run the third mode instead: the `heldlock run` command (below) |
//! | `--heldlock PATH` | `heldlock` beside this program | with `--cli`: the `heldlock` binary to drive |
//! | `--linger-one-in N` | 20 | with `--cli`: one command in N holds the lock for `stale + heartbeat` to `2 stale` (0: none) |
//!
//! Exit status: 0 when every check passed, 1 when a check failed, 2 for a
//! usage or set-up error.
//!
//! # The chaos mode
//!
//! `N` workers (this same binary, `worker` subcommand) loop: acquire the lock
//! (a `heldlock_tokio::FileLock`, or with `--lease-only` the bare lease),
//! read the counter, think for 0-3 ms, `refresh()`, and only if that says the
//! lock is still ours append the next value to the counter, then log the
//! commit in their own log, then release. For `S` seconds the driver sends a
//! signal every 100-400 ms to a worker (half the time the one named in the
//! lock file): `SIGKILL` (a third of the time; the worker is restarted as a
//! new incarnation) or `SIGSTOP` followed by `SIGCONT` after a pause shorter
//! than `stale - heartbeat`. Afterwards every worker must commit once more
//! (the lock recovered), then all stop, and the driver checks the account.
//!
//! ## Why the count is exact
//!
//! A `SIGKILL` can land between any two instructions, in particular between
//! a worker's write of the counter and the line in its log: the increment is
//! then committed but never logged. A counter file holding one number could
//! not tell that apart from an increment written twice. So the counter file
//! keeps its own history: it is append-only, one line `<value> <incarnation>
//! <seq>` per increment, and the counter's value is its last line. An
//! increment reads that last value and appends the next one, a
//! read-modify-write like any other: two holders at once would both read `v`
//! and both append `v + 1`, which shows as a repeated value. A line is
//! appended with one `write(2)` of a few bytes with `O_APPEND`, which a
//! signal cannot split. Then:
//!
//! * the values in the counter are exactly `1, 2, ..., N` in order (nothing
//!   doubled, nothing skipped), so the counter is `N`;
//! * every commit a worker logged is in the counter with the same value
//!   (nothing lost);
//! * every counter line no log mentions is the very next `seq` of an
//!   incarnation that was killed (the one window a kill can open), at most
//!   one per killed incarnation;
//! * so `N` = logged commits + commits whose log line a kill swallowed.
//!
//! It also checks that the lock file is gone at the end, that no file of the
//! protocol (trash `<lock>.breaking.*` and `<lock>.releasing.*`, break
//! markers `<lock>.break.*`, displaced files `<lock>.displaced.*`) is left
//! except trash or a marker a killed process left mid-step (reported apart), that every lock a killed holder
//! left was taken over, and that each takeover took at most
//! `stale + poll + slack`. A takeover is timed from the `SIGKILL` to the
//! moment the dead holder's lock file is gone or replaced. With `FileLock`
//! (the default) a waiter on the same host sees that the holder died (pid and
//! start time, woken by a pidfd) and breaks its lock at once; with
//! `--lease-only` the lock must first go stale.
//!
//! # The long-pause mode
//!
//! A worker acquires the lock and reads the counter; the driver then stops it
//! with `SIGSTOP` for longer than `stale`. With `--lease-only` (what a
//! contender on another host sees: no liveness probe, no kernel lock) that is
//! long enough for a second worker to break the lock, commit an increment
//! and leave. With `FileLock` on one host the stopped holder's kernel lock is
//! proof of life: the second worker must still be waiting after twice
//! `stale`, and commits only after the holder resumed and released. Resumed, the first worker
//! calls `refresh()` before it writes: the refresh must report the lock lost,
//! so the stale write is skipped. It then retries under a fresh lock, so its
//! increment is skipped, not lost: the counter ends at 2 with two commits.
//!
//! # The CLI mode
//!
//! `--cli` drives the `heldlock` command instead of the library: each of
//! `N` slots runs `heldlock run --stale .. --poll .. <lock> -- <this binary>
//! cli-command ...` again and again, each command one increment of the same
//! counter with the same account as above (an incarnation is a run of
//! commands of one slot, `seq` counts them; a kill ends the incarnation).
//! The command checks that the lock file names its wrapper's owner
//! (`HELDLOCK_OWNER`) before it reads and before it writes; one in
//! `--linger-one-in` commands lingers past `stale` between the two. Every
//! 50-250 ms the driver kills (half the time) the wrapper, the command or
//! both, or pauses (`SIGSTOP`, `SIGCONT` after at most `--max-pause-ms`)
//! the wrapper or the command, or a command whose wrapper was killed. A
//! killed wrapper's command keeps the kernel lock it inherited: no other
//! wrapper may enter until it ends, however stale the lock file's stamp
//! (each such orphan that outlived `stale` is counted). Details in
//! `heldlock-chaos/cli.rs`; its summary line starts `cli-chaos-summary`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Display;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use heldlock_core::{Lock, LockOptions, Released};
use heldlock_fs::FsBackend;
use heldlock_tokio::{FileLock, TokioRuntime};
use rustix::process::{Pid, Signal, kill_process};

// Not `src/bin/cli.rs`, which cargo would take for a binary of its own.
#[path = "heldlock-chaos/account.rs"]
mod account;
#[path = "heldlock-chaos/cli.rs"]
mod cli;
#[path = "heldlock-chaos/library.rs"]
mod library;
#[path = "heldlock-chaos/long_pause.rs"]
mod long_pause;

use account::{account, count_commits, trash, verdict};
use library::chaos;
use long_pause::{long_pause, wait_exit};

/// The lock file, the counter, the stop flag, the long-pause files.
const LOCK: &str = "counter.lock";
const COUNTER: &str = "counter";
const STOP: &str = "stop";
const PAUSED_READ: &str = "paused.read";
const PAUSED_GO: &str = "paused.go";
const PAUSED_RESULT: &str = "paused.result";

/// How much of the counter's tail is read to find its last line.
const TAIL: u64 = 256;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("worker") => run_worker(&args[1..], Role::Worker),
        Some("pausable") => run_worker(&args[1..], Role::Pausable),
        Some("cli-command") => cli::command(&args[1..]),
        _ => match Config::parse(&args) {
            Ok(Parsed::Help) => {
                println!("{}", USAGE);
                ExitCode::SUCCESS
            }
            Ok(Parsed::Run(config)) => drive(&config),
            Err(error) => {
                eprintln!("heldlock-chaos: {error}\n\n{USAGE}");
                ExitCode::from(2)
            }
        },
    }
}

const USAGE: &str = "usage: heldlock-chaos [--processes N] [--seconds S] [--stale-ms MS] [--poll-ms MS]
                      [--max-pause-ms MS] [--takeover-slack-ms MS] [--lease-only]
                      [--seed N] [--dir PATH] [--keep]
       heldlock-chaos --long-pause [--stale-ms MS] [--poll-ms MS] [--lease-only] [--dir PATH] [--keep]
       heldlock-chaos --cli [--heldlock PATH] [--linger-one-in N] [--processes N] [--seconds S]
                      [--stale-ms MS] [--poll-ms MS] [--max-pause-ms MS] [--seed N] [--dir PATH] [--keep]
(see the module documentation of tests/src/bin/heldlock-chaos.rs)";

fn text(error: impl Display) -> String {
    error.to_string()
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn millis(duration: Duration) -> u128 {
    duration.as_millis()
}

/// Wall-clock milliseconds since the epoch, shared by the driver and its
/// workers for matching skipped writes with pauses.
fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

// ---------------------------------------------------------------- options

#[derive(Debug, Clone)]
struct Config {
    processes: usize,
    seconds: Duration,
    stale_ms: u64,
    poll_ms: u64,
    max_pause_ms: Option<u64>,
    takeover_slack_ms: u64,
    seed: Option<u64>,
    dir: Option<PathBuf>,
    keep: bool,
    long_pause: bool,
    lease_only: bool,
    cli: bool,
    heldlock: Option<PathBuf>,
    linger_one_in: Option<u64>,
}

enum Parsed {
    Help,
    Run(Config),
}

impl Config {
    fn parse(args: &[String]) -> Result<Parsed, String> {
        let mut config = Config {
            processes: 4,
            seconds: Duration::from_secs(30),
            stale_ms: 1000,
            poll_ms: 10,
            max_pause_ms: None,
            takeover_slack_ms: 2000,
            seed: None,
            dir: None,
            keep: false,
            long_pause: false,
            lease_only: false,
            cli: false,
            heldlock: None,
            linger_one_in: None,
        };
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            let number = |name: &str, text: String| {
                text.parse::<u64>()
                    .map_err(|e| format!("{name} {text:?}: {e}"))
            };
            match flag.as_str() {
                "--help" | "-h" => return Ok(Parsed::Help),
                "--processes" => {
                    let n = number(flag, value(flag)?)?;
                    config.processes = usize::try_from(n).map_err(text)?;
                }
                "--seconds" => {
                    let raw = value(flag)?;
                    let secs: f64 = raw.parse().map_err(|e| format!("--seconds {raw:?}: {e}"))?;
                    config.seconds = Duration::try_from_secs_f64(secs)
                        .map_err(|e| format!("--seconds {raw:?}: {e}"))?;
                }
                "--stale-ms" => config.stale_ms = number(flag, value(flag)?)?,
                "--poll-ms" => config.poll_ms = number(flag, value(flag)?)?,
                "--max-pause-ms" => config.max_pause_ms = Some(number(flag, value(flag)?)?),
                "--takeover-slack-ms" => config.takeover_slack_ms = number(flag, value(flag)?)?,
                "--seed" => config.seed = Some(number(flag, value(flag)?)?),
                "--dir" => config.dir = Some(PathBuf::from(value(flag)?)),
                "--keep" => config.keep = true,
                "--long-pause" => config.long_pause = true,
                "--lease-only" => config.lease_only = true,
                "--cli" => config.cli = true,
                "--heldlock" => config.heldlock = Some(PathBuf::from(value(flag)?)),
                "--linger-one-in" => config.linger_one_in = Some(number(flag, value(flag)?)?),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        if !(1..=64).contains(&config.processes) {
            return Err(format!(
                "--processes must be 1 to 64, got {}",
                config.processes
            ));
        }
        if config.cli && (config.long_pause || config.lease_only) {
            return Err(
                "--cli drives the heldlock command: not with --long-pause or --lease-only".into(),
            );
        }
        if !config.cli && (config.heldlock.is_some() || config.linger_one_in.is_some()) {
            return Err("--heldlock and --linger-one-in go with --cli".into());
        }
        if config.seconds > Duration::from_secs(24 * 3600) {
            return Err("--seconds must be at most one day".into());
        }
        if !(50..=600_000).contains(&config.stale_ms) {
            return Err(format!(
                "--stale-ms must be 50 to 600000, got {}",
                config.stale_ms
            ));
        }
        if config.poll_ms == 0 || config.poll_ms > config.stale_ms {
            return Err("--poll-ms must be more than 0 and at most --stale-ms".into());
        }
        let timing = config.timing()?;
        let bound = timing.stale.saturating_sub(timing.heartbeat);
        if let Some(max) = config.max_pause_ms
            && (max == 0 || ms(max) >= bound)
        {
            return Err(format!(
                "--max-pause-ms must be more than 0 and below stale - heartbeat ({} ms)",
                millis(bound)
            ));
        }
        Ok(Parsed::Run(config))
    }

    fn options(&self) -> LockOptions {
        worker_options(self.stale_ms, self.poll_ms)
    }

    fn timing(&self) -> Result<heldlock_core::Timing, String> {
        self.options().validate().map_err(text)
    }

    /// The lock kind argument of the workers.
    fn kind(&self) -> &'static str {
        if self.lease_only { "lease" } else { "file" }
    }

    fn describe(&self) -> &'static str {
        if self.lease_only {
            "lease only (no liveness probe)"
        } else {
            "FileLock (same-host liveness probe)"
        }
    }
}

fn worker_options(stale_ms: u64, poll_ms: u64) -> LockOptions {
    LockOptions::new(ms(stale_ms))
        .poll(ms(poll_ms))
        .max_wait(Duration::from_secs(120))
}

/// The lock a worker uses: `file` is `FileLock` as users get it; `lease` is
/// the bare lease over the same backend, without the host probe.
fn worker_lock(dir: &Path, stale_ms: u64, poll_ms: u64, kind: &str) -> Result<Lock, String> {
    let path = dir.join(LOCK);
    let options = worker_options(stale_ms, poll_ms);
    match kind {
        "file" => Ok(FileLock::new(path, options)
            .map_err(text)?
            .as_lock()
            .clone()),
        "lease" => {
            let backend = FsBackend::new(path).map_err(text)?;
            Lock::new(Arc::new(backend), Arc::new(TokioRuntime::new()), options).map_err(text)
        }
        other => Err(format!("unknown lock kind {other:?}")),
    }
}

// ---------------------------------------------------------------- random

/// SplitMix64: a small, seedable generator for the schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `low..=high`.
    fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high.saturating_sub(low) + 1)
    }

    /// `true` with probability `1 / n`.
    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }

    fn index(&mut self, len: usize) -> usize {
        let len = u64::try_from(len).unwrap_or(u64::MAX).max(1);
        usize::try_from(self.next() % len).unwrap_or(0)
    }
}

fn clock_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // The low 64 bits are the ones that vary.
    u64::try_from(nanos & u128::from(u64::MAX)).unwrap_or(0) ^ u64::from(std::process::id())
}

// ---------------------------------------------------------------- the counter

/// The counter's value: the first field of its last line, 0 when empty.
fn last_value(counter: &Path) -> Result<u64, String> {
    let mut file = match File::open(counter) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(format!("open the counter: {e}")),
    };
    let len = file.metadata().map_err(text)?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL)))
        .map_err(text)?;
    let mut tail = String::new();
    file.read_to_string(&mut tail)
        .map_err(|e| format!("read the counter: {e}"))?;
    if tail.is_empty() {
        return Ok(0);
    }
    if !tail.ends_with('\n') {
        return Err(format!("the counter's last line is incomplete: {tail:?}"));
    }
    let line = tail
        .trim_end_matches('\n')
        .rsplit('\n')
        .next()
        .unwrap_or("");
    line.split(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("the counter's last line is not a count: {line:?}"))
}

/// Appends `line` with one `write(2)` under `O_APPEND`.
fn append(path: &Path, line: &str) -> Result<(), String> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    file.write_all(line.as_bytes())
        .map_err(|e| format!("append to {}: {e}", path.display()))
}

/// Writes `content` to `path` through a temporary file and a rename, so a
/// reader never sees half of it.
fn write_atomically(path: &Path, content: &str) -> Result<(), String> {
    let temp = path.with_extension("tmp");
    fs::write(&temp, content).map_err(|e| format!("write {}: {e}", temp.display()))?;
    fs::rename(&temp, path).map_err(|e| format!("rename to {}: {e}", path.display()))
}

// ---------------------------------------------------------------- workers

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Worker,
    Pausable,
}

fn run_worker(args: &[String], role: Role) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("heldlock-chaos worker: no runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let result = match role {
        Role::Worker => runtime.block_on(worker(args)),
        Role::Pausable => runtime.block_on(pausable(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!(
                "heldlock-chaos worker {} {args:?}: {error}",
                std::process::id()
            );
            ExitCode::FAILURE
        }
    }
}

fn parse_arg<T: std::str::FromStr>(args: &[String], i: usize, name: &str) -> Result<T, String>
where
    T::Err: Display,
{
    let raw = args
        .get(i)
        .ok_or_else(|| format!("missing argument <{name}>"))?;
    raw.parse().map_err(|e| format!("<{name}> {raw:?}: {e}"))
}

/// `worker <dir> <incarnation> <stale-ms> <poll-ms> <file|lease> [<max-increments>]`:
/// increments until `<dir>/stop` exists (or `max-increments` are done).
async fn worker(args: &[String]) -> Result<(), String> {
    let dir = PathBuf::from(parse_arg::<String>(args, 0, "dir")?);
    let inc: u64 = parse_arg(args, 1, "incarnation")?;
    let stale_ms: u64 = parse_arg(args, 2, "stale-ms")?;
    let poll_ms: u64 = parse_arg(args, 3, "poll-ms")?;
    let kind: String = parse_arg(args, 4, "lock kind")?;
    let max: Option<u64> = match args.get(5) {
        Some(_) => Some(parse_arg(args, 5, "max-increments")?),
        None => None,
    };
    let lock = worker_lock(&dir, stale_ms, poll_ms, &kind)?;
    let counter = dir.join(COUNTER);
    let log = dir.join(format!("log.{inc}"));
    let mut rng = Rng(clock_seed());
    let mut seq = 0u64;
    let mut commits = 0u64;
    while max.is_none_or(|m| commits < m) && !dir.join(STOP).exists() {
        let held = lock.acquire().await.map_err(text)?;
        let value = last_value(&counter)?;
        // Work inside the critical section, so that signals land in it.
        tokio::time::sleep(Duration::from_micros(rng.range(0, 3000))).await;
        if held.refresh().await.map_err(text)? {
            append(&counter, &format!("{} {inc} {seq}\n", value + 1))?;
            append(&log, &format!("commit {seq} {}\n", value + 1))?;
            commits += 1;
        } else {
            append(&log, &format!("skip {seq} {value} {}\n", epoch_ms()))?;
        }
        match held.release().await.map_err(text)? {
            Released::Released => {}
            other => eprintln!("heldlock-chaos worker {inc}: release found {other:?}"),
        }
        seq += 1;
    }
    Ok(())
}

/// `pausable <dir> <stale-ms> <poll-ms> <file|lease>`: the first worker of the long-pause
/// mode, incarnation 0. Acquires, reads the counter, reports the value read
/// in `paused.read`, and waits for `paused.go` (the driver stops it in
/// between); then refreshes before it writes, and retries under a fresh lock
/// if the refresh says the lock was lost. Writes what happened to
/// `paused.result`.
async fn pausable(args: &[String]) -> Result<(), String> {
    let dir = PathBuf::from(parse_arg::<String>(args, 0, "dir")?);
    let stale_ms: u64 = parse_arg(args, 1, "stale-ms")?;
    let poll_ms: u64 = parse_arg(args, 2, "poll-ms")?;
    let kind: String = parse_arg(args, 3, "lock kind")?;
    let lock = worker_lock(&dir, stale_ms, poll_ms, &kind)?;
    let counter = dir.join(COUNTER);
    let log = dir.join("log.0");

    let held = lock.acquire().await.map_err(text)?;
    let read = last_value(&counter)?;
    write_atomically(&dir.join(PAUSED_READ), &format!("{read}\n"))?;
    // An async wait, so that the heartbeat keeps the lock fresh until the
    // driver's SIGSTOP freezes the whole process.
    while !dir.join(PAUSED_GO).exists() {
        tokio::time::sleep(ms(5)).await;
    }
    let still_ours = held.refresh().await.map_err(text)?;
    let lost_signalled = held.is_lost();
    let first = if still_ours {
        // The failure this mode exists to rule out: a stale write.
        append(&counter, &format!("{} 0 0\n", read + 1))?;
        append(&log, &format!("commit 0 {}\n", read + 1))?;
        "wrote"
    } else {
        append(&log, &format!("skip 0 {read} {}\n", epoch_ms()))?;
        "skipped"
    };
    let released = held.release().await.map_err(text)?;

    let held = lock.acquire().await.map_err(text)?;
    let value = last_value(&counter)?;
    if !held.refresh().await.map_err(text)? {
        return Err("lost a freshly acquired lock on retry".into());
    }
    append(&counter, &format!("{} 0 1\n", value + 1))?;
    append(&log, &format!("commit 1 {}\n", value + 1))?;
    held.release().await.map_err(text)?;
    write_atomically(
        &dir.join(PAUSED_RESULT),
        &format!(
            "first={first} read={read} refresh={still_ours} lost={lost_signalled} \
             release={released:?} retry_value={}\n",
            value + 1
        ),
    )
}

// ---------------------------------------------------------------- the fleet

struct Slot {
    child: Child,
    pid: i32,
    inc: u64,
    paused_until: Option<Instant>,
    /// When the current pause began (epoch ms).
    paused_since: u64,
}

/// The worker processes. Dropping it kills whatever still runs.
struct Fleet {
    exe: PathBuf,
    dir: PathBuf,
    stale_ms: u64,
    poll_ms: u64,
    kind: &'static str,
    slots: Vec<Slot>,
    next_inc: u64,
    /// Incarnation and pid of every worker killed on purpose.
    killed: BTreeMap<u64, i32>,
    /// (incarnation, start, end) of every pause, in epoch ms.
    pauses: Vec<(u64, u64, u64)>,
}

impl Fleet {
    fn new(config: &Config, dir: &Path) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("find this program: {e}"))?;
        Ok(Fleet {
            exe,
            dir: dir.to_path_buf(),
            stale_ms: config.stale_ms,
            poll_ms: config.poll_ms,
            kind: config.kind(),
            slots: Vec::new(),
            next_inc: 0,
            killed: BTreeMap::new(),
            pauses: Vec::new(),
        })
    }

    fn spawn(&mut self, extra: &[String]) -> Result<Slot, String> {
        let inc = self.next_inc;
        self.next_inc += 1;
        let child = Command::new(&self.exe)
            .arg("worker")
            .arg(&self.dir)
            .arg(inc.to_string())
            .arg(self.stale_ms.to_string())
            .arg(self.poll_ms.to_string())
            .arg(self.kind)
            .args(extra)
            .spawn()
            .map_err(|e| format!("start a worker: {e}"))?;
        let pid = i32::try_from(child.id()).map_err(text)?;
        Ok(Slot {
            child,
            pid,
            inc,
            paused_until: None,
            paused_since: 0,
        })
    }

    fn signal(pid: i32, signal: Signal) -> Result<(), String> {
        let pid = Pid::from_raw(pid).ok_or("a worker with pid 0")?;
        kill_process(pid, signal).map_err(|e| format!("signal {signal:?} to {pid:?}: {e}"))
    }

    /// Stops `pid` with `SIGSTOP` and waits until it is stopped.
    fn stop(pid: i32) -> Result<(), String> {
        Self::signal(pid, Signal::STOP)?;
        wait_for(Duration::from_secs(5), "a worker to stop", || {
            process_state(pid).is_none_or(|state| matches!(state, 'T' | 't' | 'Z' | 'X'))
        })
    }

    /// Kills slot `i` and waits for it; returns its pid. The slot is then
    /// restarted as a new incarnation.
    fn kill_and_restart(&mut self, i: usize) -> Result<i32, String> {
        let slot = &mut self.slots[i];
        let pid = slot.pid;
        Self::signal(pid, Signal::KILL)?;
        slot.child
            .wait()
            .map_err(|e| format!("reap worker {pid}: {e}"))?;
        self.killed.insert(slot.inc, pid);
        let fresh = self.spawn(&[])?;
        self.slots[i] = fresh;
        Ok(pid)
    }

    fn resume_due(&mut self, now: Instant) -> Result<(), String> {
        for slot in &mut self.slots {
            if slot.paused_until.is_some_and(|until| until <= now) {
                Self::signal(slot.pid, Signal::CONT)?;
                slot.paused_until = None;
                self.pauses.push((slot.inc, slot.paused_since, epoch_ms()));
            }
        }
        Ok(())
    }

    fn resume_all(&mut self) -> Result<(), String> {
        for slot in &mut self.slots {
            if slot.paused_until.take().is_some() {
                Self::signal(slot.pid, Signal::CONT)?;
                self.pauses.push((slot.inc, slot.paused_since, epoch_ms()));
            }
        }
        Ok(())
    }

    /// An error if a worker ended without being told to.
    fn check_alive(&mut self) -> Result<(), String> {
        for slot in &mut self.slots {
            if let Some(status) = slot.child.try_wait().map_err(text)? {
                return Err(format!(
                    "worker incarnation {} (pid {}) ended by itself: {status}",
                    slot.inc, slot.pid
                ));
            }
        }
        Ok(())
    }

    fn slot_of(&self, pid: i32) -> Option<usize> {
        self.slots.iter().position(|s| s.pid == pid)
    }

    /// Waits for every worker to exit, each successfully.
    fn wait_all(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let mut failures = Vec::new();
        while let Some(mut slot) = self.slots.pop() {
            loop {
                match slot.child.try_wait().map_err(text)? {
                    Some(status) if status.success() => break,
                    Some(status) => {
                        failures.push(format!("incarnation {}: {status}", slot.inc));
                        break;
                    }
                    None if Instant::now() > deadline => {
                        // Put it back so that Drop kills it.
                        self.slots.push(slot);
                        return Err(format!("workers still running after {limit:?}"));
                    }
                    None => std::thread::sleep(ms(10)),
                }
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(format!("workers failed: {}", failures.join(", ")))
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for slot in &mut self.slots {
            let _ = Self::signal(slot.pid, Signal::CONT);
            let _ = slot.child.kill();
            let _ = slot.child.wait();
        }
    }
}

// ---------------------------------------------------------------- the lock, seen from outside

/// The state letter of `pid` in `/proc/<pid>/stat`; `None` once it is gone.
fn process_state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.trim_start().chars().next()
}

/// The pid named by the record in the lock file, if any.
fn lock_pid(lock: &Path) -> Option<i32> {
    let content = fs::read(lock).ok()?;
    let text = std::str::from_utf8(&content).ok()?;
    text.split(' ').next()?.parse().ok()
}

/// A lock left by a killed holder, watched until it is gone or replaced.
struct Takeover {
    killed_at: Instant,
    ino: u64,
    content: Vec<u8>,
    took: Option<Duration>,
}

impl Takeover {
    /// The lock at `lock` if it names `pid` (timed from now until
    /// `killed_at` is set).
    fn of(lock: &Path, pid: i32) -> Option<Self> {
        let meta = fs::symlink_metadata(lock).ok()?;
        let content = fs::read(lock).ok()?;
        let named = std::str::from_utf8(&content)
            .ok()
            .and_then(|t| t.split(' ').next())
            .and_then(|p| p.parse::<i32>().ok());
        (named == Some(pid)).then_some(Takeover {
            killed_at: Instant::now(),
            ino: meta.ino(),
            content,
            took: None,
        })
    }

    fn poll(&mut self, lock: &Path, now: Instant) {
        if self.took.is_some() {
            return;
        }
        let same = fs::symlink_metadata(lock)
            .is_ok_and(|m| m.ino() == self.ino && fs::read(lock).is_ok_and(|c| c == self.content));
        if !same {
            self.took = Some(now.saturating_duration_since(self.killed_at));
        }
    }
}

// ---------------------------------------------------------------- the account

#[derive(Debug, Default)]
struct Account {
    /// The counter's value: its last line's.
    counter: u64,
    /// Lines in the counter.
    commits: u64,
    /// Commits some worker logged.
    logged: u64,
    /// Commits whose log line a SIGKILL swallowed.
    unlogged_after_kill: u64,
    /// Writes skipped because `refresh()` said the lock was lost.
    skipped: u64,
    /// (incarnation, seq, epoch ms) of each skipped write.
    skips: Vec<(u64, u64, u64)>,
    /// Increments lost: logged but not in the counter, or values missing
    /// from it.
    lost: u64,
    /// Increments doubled: a value written twice (two holders read the
    /// same value), or one commit in the counter twice.
    doubled: u64,
    problems: Vec<String>,
}

// ---------------------------------------------------------------- driving

/// The run directory: the one given, or a fresh temporary one.
fn run_dir(config: &Config) -> Result<PathBuf, String> {
    let dir = match &config.dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!(
            "heldlock-chaos-{}-{}",
            std::process::id(),
            clock_seed() % 1_000_000
        )),
    };
    fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let occupied = fs::read_dir(&dir).map_err(text)?.next().is_some();
    if occupied {
        return Err(format!(
            "{} is not empty; give an empty or new --dir",
            dir.display()
        ));
    }
    Ok(dir)
}

fn drive(config: &Config) -> ExitCode {
    let heldlock = match config.cli.then(|| cli::binary(config)).transpose() {
        Ok(heldlock) => heldlock,
        Err(error) => {
            eprintln!("heldlock-chaos: {error}");
            return ExitCode::from(2);
        }
    };
    let dir = match run_dir(config) {
        Ok(dir) => dir,
        Err(error) => {
            eprintln!("heldlock-chaos: {error}");
            return ExitCode::from(2);
        }
    };
    let outcome = if let Some(heldlock) = &heldlock {
        cli::chaos(config, &dir, heldlock)
    } else if config.long_pause {
        long_pause(config, &dir)
    } else {
        chaos(config, &dir)
    };
    match outcome {
        Ok(()) => {
            if config.keep || config.dir.is_some() {
                println!("kept: {}", dir.display());
            } else {
                let _ = fs::remove_dir_all(&dir);
            }
            println!("result: OK");
            ExitCode::SUCCESS
        }
        Err(error) => {
            println!("result: FAILED: {error}");
            println!("kept for inspection: {}", dir.display());
            ExitCode::FAILURE
        }
    }
}

/// Polls `done` every 5 ms for up to `limit`.
fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("timed out after {limit:?} waiting for {what}"));
        }
        std::thread::sleep(ms(5));
    }
    Ok(())
}
