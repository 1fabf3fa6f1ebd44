//! The `--cli` mode of `heldlock-chaos`: every increment is a command run by
//! `heldlock run`, and the signals go to the wrapper, to its command, or to
//! both (the binary's module docs give the outline and the account).
//!
//! # Processes
//!
//! Each wrapper is started in a process group of its own, which its command
//! shares, and the driver is a child subreaper (`PR_SET_CHILD_SUBREAPER`):
//! a killed wrapper's command becomes the driver's child, which the driver
//! waits for (an *orphan*: it holds the lock through the descriptor and
//! kernel lock it inherited). Neither the group nor the orphan is ever left
//! in an orphaned process group, so the kernel sends no `SIGHUP` to a
//! stopped orphan. A command is found as the child of its wrapper in
//! `/proc`, and every process is signalled through a pidfd, never by a pid
//! that may have been reused.
//!
//! # Kills
//!
//! * wrapper: the command, if one runs, must keep the lock until it ends,
//!   however stale the lock file's stamp; then a waiter breaks the lock of
//!   the dead wrapper. A kill ends the slot's incarnation.
//! * command: the wrapper sees it die (exit 137), releases, exits.
//! * both: the wrapper's process group at once, or the command and then the
//!   wrapper; the lock of a dead holder without a kernel lock is broken.
//!
//! A command killed between its counter line and its log line leaves an
//! increment that no log names: the account allows exactly that for the
//! incarnations whose command was killed (the commands of the others must
//! all log). After the signals stop, the slots keep incrementing for at
//! least `2 stale` (so that trash a killed process left ages and is swept)
//! until each has committed again; then they stop, and nothing may be left:
//! no lock file, no trash, no queue file, no process.
//!
//! # Problems
//!
//! Besides the account's (lost, doubled, unexplained increments): a command
//! that found the lock file naming another owner (`not_ours`), a wrapper
//! that ended with a status of its own instead of its command's
//! (`wrapper_failures`: counted, and the slot goes on as a new incarnation),
//! a file or process left. Any problem makes the run fail (exit 1). The
//! wrappers' and commands' standard error is in `wrappers.err`; a waiter's
//! `broke a stale lock` warning is expected and only counted (`breaks`).

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use rustix::process::{getpid, set_child_subreaper};

use crate::account::{account, trash, verdict};
use crate::config::Config;
use crate::files::{COUNTER, LOCK, append, last_value};
use crate::rng::{Rng, clock_seed};
use crate::util::{millis, ms, text};
use crate::worker::parse_arg;

mod fleet;

use fleet::{Action, Fleet, NOT_OURS, STDERR, Slot, Tally, children};

/// The gap between two signals, in ms.
const GAP_MS: (u64, u64) = (50, 250);
/// The wrappers' `XDG_RUNTIME_DIR` and `TMPDIR` (their queue files), in the
/// run's directory.
const RUNTIME: &str = "runtime";

// ---------------------------------------------------------------- the command

/// `cli-command <dir> <incarnation> <seq> <linger-ms>`: one increment, run
/// by `heldlock run`, which holds the lock. Exits 3 (after the increment)
/// if the lock file did not name its wrapper's owner before the read or
/// before the write.
pub(super) fn command(args: &[String]) -> ExitCode {
    match increment(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(NOT_OURS as u8),
        Err(error) => {
            eprintln!("heldlock-chaos cli-command {args:?}: {error}");
            ExitCode::from(2)
        }
    }
}

fn increment(args: &[String]) -> Result<bool, String> {
    let dir = PathBuf::from(parse_arg::<String>(args, 0, "dir")?);
    let inc: u64 = parse_arg(args, 1, "incarnation")?;
    let seq: u64 = parse_arg(args, 2, "seq")?;
    let linger: u64 = parse_arg(args, 3, "linger-ms")?;
    let owner = std::env::var("HELDLOCK_OWNER")
        .map_err(|_| "HELDLOCK_OWNER is not set: the command runs without the lock")?;
    let lock = dir.join(LOCK);
    let counter = dir.join(COUNTER);
    let before = lock_owner(&lock);
    let value = last_value(&counter)?;
    let think = if linger > 0 {
        ms(linger)
    } else {
        Duration::from_micros(Rng(clock_seed()).range(0, 3000))
    };
    std::thread::sleep(think);
    let after = lock_owner(&lock);
    append(&counter, &format!("{} {inc} {seq}\n", value + 1))?;
    append(
        &dir.join(format!("log.{inc}")),
        &format!("commit {seq} {}\n", value + 1),
    )?;
    let ours = |seen: &Option<String>| seen.as_deref() == Some(owner.as_str());
    if !(ours(&before) && ours(&after)) {
        eprintln!(
            "heldlock-chaos cli-command {inc} {seq}: the lock file did not name our owner {owner}: \
             before the read {before:?}, before the write {after:?}"
        );
        return Ok(false);
    }
    Ok(true)
}

/// The owner named by the record in the lock file, if any.
fn lock_owner(lock: &Path) -> Option<String> {
    let content = fs::read_to_string(lock).ok()?;
    content.split(' ').nth(1).map(str::to_owned)
}

/// The `heldlock` binary: `--heldlock`, or the one beside this program
/// (`cargo build [--release] -p heldlock-cli` puts it there).
pub(super) fn binary(config: &Config) -> Result<PathBuf, String> {
    let path = match &config.heldlock {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .map_err(|e| format!("find this program: {e}"))?
            .with_file_name("heldlock"),
    };
    if !path.is_file() {
        return Err(format!(
            "no heldlock binary at {}: build it with `cargo build -p heldlock-cli` (with \
             --release for a release build of heldlock-chaos), or give --heldlock PATH",
            path.display()
        ));
    }
    std::path::absolute(&path).map_err(|e| format!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------- the run

/// What is left of the lock (the lock file, trash, break markers) beside
/// it, and the queue files in the wrappers' runtime directory.
fn left(dir: &Path, runtime: &Path) -> Result<Vec<String>, String> {
    let mut left = Vec::new();
    for entry in fs::read_dir(dir).map_err(text)? {
        let name = entry
            .map_err(text)?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name.starts_with(LOCK) {
            left.push(name);
        }
    }
    let mut dirs = vec![runtime.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in fs::read_dir(&d).map_err(|e| format!("list {}: {e}", d.display()))? {
            let entry = entry.map_err(text)?;
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(entry.path());
            } else {
                left.push(entry.path().display().to_string());
            }
        }
    }
    Ok(left)
}

pub(super) fn chaos(config: &Config, dir: &Path, heldlock: &Path) -> Result<(), String> {
    let timing = config.timing()?;
    let bound = timing.stale.saturating_sub(timing.heartbeat);
    let max_pause = config.max_pause_ms.map_or(bound * 2 / 3, ms).max(ms(1));
    let seed = config.seed.unwrap_or_else(clock_seed);
    let stale = timing.stale;
    let heartbeat_ms = u64::try_from(millis(timing.heartbeat)).map_err(text)?;
    let linger_ms = (config.stale_ms + heartbeat_ms, config.stale_ms * 2);
    let linger_one_in = config.linger_one_in.unwrap_or(20);
    let built = fs::metadata(heldlock)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|at| SystemTime::now().duration_since(at).ok())
        .map_or("?".to_owned(), |age| format!("{} s", age.as_secs()));
    println!(
        "heldlock-chaos --cli: {} processes, {:.1} s, stale {} ms, heartbeat {} ms, poll {} ms, \
         pauses 10..={} ms, one command in {linger_one_in} lingers {}..={} ms, seed {seed}, \
         heldlock {} (built {built} ago), dir {}",
        config.processes,
        config.seconds.as_secs_f64(),
        millis(stale),
        heartbeat_ms,
        millis(timing.poll),
        millis(max_pause),
        linger_ms.0,
        linger_ms.1,
        heldlock.display(),
        dir.display()
    );
    set_child_subreaper(Some(getpid())).map_err(|e| format!("become a child subreaper: {e}"))?;
    let runtime = dir.join(RUNTIME);
    fs::create_dir(&runtime).map_err(|e| format!("create {}: {e}", runtime.display()))?;
    fs::set_permissions(
        &runtime,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .map_err(text)?;
    let stderr = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(STDERR))
        .map_err(|e| format!("create {STDERR}: {e}"))?;
    let mut fleet = Fleet {
        heldlock: heldlock.to_path_buf(),
        exe: std::env::current_exe().map_err(|e| format!("find this program: {e}"))?,
        dir: dir.to_path_buf(),
        lock: dir.join(LOCK),
        runtime: runtime.clone(),
        stderr,
        stale_ms: config.stale_ms,
        poll_ms: config.poll_ms,
        linger_ms,
        linger_one_in,
        me: getpid().as_raw_nonzero().get(),
        slots: Vec::new(),
        orphans: Vec::new(),
        paused: Vec::new(),
        next_inc: 0,
        command_killed: BTreeMap::new(),
        wrapper_killed: BTreeMap::new(),
        tally: Tally::default(),
        rng: Rng(seed),
        want_linger: false,
        problems: Vec::new(),
        stopping: false,
    };
    for i in 0..config.processes {
        fleet.slots.push(Slot {
            inc: 0,
            seq: 0,
            wrapper: None,
            commits: 0,
        });
        fleet.new_incarnation(i);
        fleet.start(i)?;
    }

    let started = Instant::now();
    let end = started + config.seconds;
    let half = started + config.seconds / 2;
    let mut next_event = started + ms(fleet.rng.range(GAP_MS.0, GAP_MS.1));
    while Instant::now() < end {
        fleet.reap(stale)?;
        fleet.resume(false)?;
        let now = Instant::now();
        if now >= next_event {
            // A bounded run shows each kind of event at least once.
            let action = match fleet.tally.missing().filter(|_| now >= half) {
                Some(action) => action,
                None if fleet.rng.one_in(2) => {
                    [Action::KillWrapper, Action::KillCommand, Action::KillBoth][fleet.rng.index(3)]
                }
                None if !fleet.orphans.is_empty() && fleet.rng.one_in(4) => Action::PauseOrphan,
                None if fleet.rng.one_in(2) => Action::PauseWrapper,
                None => Action::PauseCommand,
            };
            next_event = if fleet.act(action, max_pause)? {
                now + ms(fleet.rng.range(GAP_MS.0, GAP_MS.1))
            } else {
                now + ms(5)
            };
        }
        std::thread::sleep(ms(2));
    }

    // Recovery: no more signals. Every slot must commit again and every
    // orphan end; and the run goes on for `2 stale`, so that trash a killed
    // process left ages past `stale` and a wrapper sweeps it.
    fleet.resume(true)?;
    let settled_at = Instant::now();
    let limit = stale * 6 + Duration::from_secs(30);
    let baseline: Vec<u64> = fleet.slots.iter().map(|s| s.commits).collect();
    loop {
        fleet.reap(stale)?;
        let recovered = settled_at.elapsed() >= stale * 2
            && fleet.orphans.is_empty()
            && fleet
                .slots
                .iter()
                .zip(&baseline)
                .all(|(s, &b)| s.commits > b);
        if recovered {
            break;
        }
        if settled_at.elapsed() > limit {
            return Err(format!(
                "no recovery within {limit:?} after the last signal: {} orphan(s) running, \
                 slots without a new commit: {:?}",
                fleet.orphans.len(),
                fleet
                    .slots
                    .iter()
                    .zip(&baseline)
                    .filter(|&(s, &b)| s.commits <= b)
                    .map(|(s, _)| s.inc)
                    .collect::<Vec<_>>()
            ));
        }
        std::thread::sleep(ms(5));
    }
    fleet.stopping = true;
    while fleet.slots.iter().any(|s| s.wrapper.is_some()) {
        fleet.reap(stale)?;
        if settled_at.elapsed() > limit * 2 {
            return Err("the wrappers did not finish their last increments".into());
        }
        std::thread::sleep(ms(5));
    }
    report(&mut fleet, &runtime, max_pause)
}

fn report(fleet: &mut Fleet, runtime: &Path, max_pause: Duration) -> Result<(), String> {
    let dir = fleet.dir.clone();
    let acc = account(&dir, fleet.next_inc, &fleet.command_killed);
    let (mid_step, _) = trash(&dir, &fleet.wrapper_killed)?;
    let left = left(&dir, runtime)?;
    let strays = children()?.remove(&fleet.me).unwrap_or_default();
    let stderr = fs::read_to_string(dir.join(STDERR)).unwrap_or_default();
    // A waiter's break of a dead holder's lock is logged and expected.
    let (breaks, others): (Vec<&str>, Vec<&str>) = stderr
        .lines()
        .partition(|l| l.contains("broke a stale lock"));
    let lost_warnings = others
        .iter()
        .filter(|l| l.contains("lost the lock"))
        .count();
    let t = &fleet.tally;

    println!(
        "kills: {} (wrapper {}, of which {} left a command holding the lock; command {}; \
         both {}), each followed by a new incarnation",
        t.kills(),
        t.kills_wrapper,
        t.orphans,
        t.kills_command,
        t.kills_both
    );
    println!(
        "pauses: {} (wrapper {}, command {}, command of a killed wrapper {}), longest {} ms \
         (bound {} ms)",
        t.pauses(),
        t.pauses_wrapper,
        t.pauses_command,
        t.pauses_orphan,
        millis(t.longest_pause),
        millis(max_pause)
    );
    println!(
        "commands of killed wrappers: {} ran on more than stale after the kill, the longest \
         {} ms, holding the lock",
        t.orphans_past_stale,
        millis(t.longest_orphan)
    );
    println!(
        "increments: {} = counter {} ({} logged, {} committed just before a SIGKILL took the \
         log line); lost {}, doubled {}",
        acc.commits, acc.counter, acc.logged, acc.unlogged_after_kill, acc.lost, acc.doubled
    );
    println!(
        "files left: {} {left:?} ({} trash of a process killed mid-step); processes left: {}",
        left.len(),
        mid_step.len(),
        strays.len()
    );
    println!(
        "wrapper and command stderr: {} break(s) of a dead holder's lock; {} other line(s), \
         {lost_warnings} saying a lock was lost",
        breaks.len(),
        others.len()
    );
    for line in others.iter().take(10) {
        println!("  {line}");
    }
    let mut problems = std::mem::take(&mut fleet.problems);
    problems.extend(acc.problems);
    if !left.is_empty() {
        problems.push(format!("files left: {left:?}"));
    }
    if !strays.is_empty() {
        problems.push(format!("processes outlived the run: {strays:?}"));
    }
    println!(
        "cli-chaos-summary kills={} kills_wrapper={} kills_command={} kills_both={} pauses={} \
         pauses_wrapper={} pauses_command={} pauses_orphan={} events={} orphans={} \
         orphans_past_stale={} increments={} counter={} logged={} unlogged_after_kill={} \
         lost={} doubled={} not_ours={} wrapper_failures={} files_left={} trash_mid_step={} processes_left={} \
         breaks={} other_stderr={} lost_warnings={lost_warnings} problems={}",
        t.kills(),
        t.kills_wrapper,
        t.kills_command,
        t.kills_both,
        t.pauses(),
        t.pauses_wrapper,
        t.pauses_command,
        t.pauses_orphan,
        t.kills() + t.pauses(),
        t.orphans,
        t.orphans_past_stale,
        acc.commits,
        acc.counter,
        acc.logged,
        acc.unlogged_after_kill,
        acc.lost,
        acc.doubled,
        t.not_ours,
        t.wrapper_failures,
        left.len(),
        mid_step.len(),
        strays.len(),
        breaks.len(),
        others.len(),
        problems.len()
    );
    verdict(&problems)
}
