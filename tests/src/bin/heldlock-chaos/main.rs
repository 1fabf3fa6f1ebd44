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
//! `cli.rs`; its summary line starts `cli-chaos-summary`.

mod account;
mod cli;
mod config;
mod files;
mod fleet;
mod library;
mod long_pause;
mod observe;
mod rng;
mod util;
mod worker;

use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;

use config::{Config, Parsed};
use library::chaos;
use long_pause::long_pause;
use rng::clock_seed;
use util::text;
use worker::{Role, run_worker};

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
(see the module documentation of tests/src/bin/heldlock-chaos/main.rs)";

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
