//! The worker side of the library and long-pause modes: the `worker` and
//! `pausable` subcommands this binary runs as, in processes the driver
//! starts and signals, and the lock they take.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use heldlock_core::{Lock, LockOptions, Released};
use heldlock_fs::FsBackend;
use heldlock_tokio::{FileLock, TokioRuntime};

use crate::files::{
    COUNTER, LOCK, PAUSED_GO, PAUSED_READ, PAUSED_RESULT, STOP, append, last_value,
    write_atomically,
};
use crate::rng::{Rng, clock_seed};
use crate::util::{epoch_ms, ms, text};

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Worker,
    Pausable,
}

pub(super) fn run_worker(args: &[String], role: Role) -> ExitCode {
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

pub(super) fn parse_arg<T: std::str::FromStr>(
    args: &[String],
    i: usize,
    name: &str,
) -> Result<T, String>
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

pub(super) fn worker_options(stale_ms: u64, poll_ms: u64) -> LockOptions {
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
