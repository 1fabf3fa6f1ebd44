//! The `heldlock` command: run a command under a held lock file, look at a
//! lock, break a stale one.
//!
//! ```text
//! heldlock run [--stale D] [-w SECONDS|D | -n] [-E N] [--mkdir] [--poll D] [--heartbeat D] [--best-effort] <LOCK> (-- <COMMAND> [ARGS...] | -c <SHELL_COMMAND>)
//! heldlock status <LOCK> [--json] [--stale D]
//! heldlock break <LOCK> [--stale D] [--force] [--json]
//! ```
//!
//! Every command takes `-v` (repeatable) for more log lines on stderr, and
//! honours `RUST_LOG`; see [`logs`].
//!
//! One module per idea: [`cli`] (arguments), [`target`] (what LOCK
//! names: a file, or an etcd key with the `etcd` feature, whose connecting
//! is `etcd`), [`duration`] (human
//! durations), [`exit`] (exit codes and errors), [`run`], [`directory`]
//! (the lock's directory, `--mkdir`), [`waiting`] (acquiring with a
//! spinner), [`signals`] (forwarding), [`status`], [`breaking`], [`json`]
//! (what `--json` prints), [`holder`] (describing a lock's holder), [`logs`]
//! (the log lines on stderr: `-v`, `RUST_LOG`).
//!
//! Exit codes are listed in [`exit`]. Choices worth knowing:
//!
//! * a lost lock (a peer broke it while the command ran) is reported on
//!   stderr, and the command is not stopped: only it knows how to stop
//!   safely half-way;
//! * only a lock is ever broken: a file at the lock path that is not one (a
//!   data file, a script, a symbolic link, a FIFO, socket, device or
//!   directory) is an error that waiting would not cure: exit 1, the file
//!   untouched (`break --force` removes it on request). An unwritable
//!   directory is the same kind of error. `--best-effort` turns either into
//!   a warning and an unlocked run.
//! * the command inherits a descriptor of the lock file and its kernel lock:
//!   if heldlock is killed, contenders on this host still wait for as long
//!   as any process of the command runs.
#![warn(missing_docs)]

/// Prints a line on stdout. A closed pipe (`heldlock status x | head -0`)
/// is not worth a panic, so write errors are ignored.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// Prints a line on stderr, ignoring write errors (see [`outln`]).
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

mod breaking;
mod cli;
mod directory;
mod duration;
#[cfg(feature = "etcd")]
mod etcd;
mod exit;
mod holder;
mod json;
mod logs;
mod run;
mod signals;
mod status;
mod target;
mod waiting;

use std::process::ExitCode;

use crate::cli::Command;
use crate::exit::CliError;

fn main() -> ExitCode {
    let cli = match cli::parse() {
        Ok(cli) => cli,
        Err(code) => return ExitCode::from(code),
    };
    logs::install(cli.verbose);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = match runtime {
        Ok(runtime) => runtime.block_on(dispatch(cli.command)),
        Err(source) => Err(CliError::Io {
            action: "start the async runtime",
            source,
        }),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            errln!("heldlock: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

/// Runs one subcommand; returns the exit code.
async fn dispatch(command: Command) -> Result<u8, CliError> {
    match command {
        Command::Run(args) => run::run(args).await,
        Command::Status(args) => status::status(args).await,
        Command::Break(args) => breaking::break_lock(args).await,
    }
}
