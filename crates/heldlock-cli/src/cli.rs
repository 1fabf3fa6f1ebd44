//! The command line: clap's definitions, and parsing that reports every
//! usage error on one line with exit code 64.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand};

use crate::duration;
use crate::exit;
use crate::json;

/// The `heldlock` command line.
#[derive(Debug, Parser)]
#[command(
    name = "heldlock",
    version,
    about = "Run a command under a held lock file; inspect a lock; break a stale one",
    long_about = "Run a command under a held lock file; inspect a lock; break a stale one.\n\n\
        A held lock is a file created atomically, kept fresh by a heartbeat while its holder \
        runs, and broken by the next contender once it has not been refreshed for `--stale` \
        (its holder is presumed dead). flock(1) takes a kernel lock instead, which the kernel \
        drops when its holder dies: on one host, flock survives a crashed holder too. A held \
        lock adds what a kernel lock lacks: it works across hosts on any shared file system \
        (flock across hosts depends on the file system's lock support), it names its holder \
        (pid, host, since when), and `status` and `break` inspect and clear it.\n\n\
        `heldlock run` takes flock's habits: -n, -w SECONDS, -E CODE, -c 'shell command', and \
        without -w it waits until it gets the lock.\n\n\
        Durations are human: 500ms, 30s, 2m; `run -w` also takes a bare number of seconds as \
        flock does (5, 0.5).\n\n\
        Logs go to stderr, never stdout: by default warnings only (a stale lock broken, a lock \
        lost); -v adds what heldlock does (acquired, released), -vv the lock library's steps, \
        -vvv everything. RUST_LOG directives (e.g. RUST_LOG=heldlock_fs=debug, or off) apply on \
        top and win where they apply.\n\n\
        Exit codes:\n  \
        run:    the command's status (128+N if it was killed by signal N); 75 (or -E N) the \
        lock is busy; 126/127 the command could not be started / was not found; 1 an error \
        that waiting would not cure; 64 bad input; 128+N a signal N ended the wait.\n  \
        status: 0 free; 1 held; 2 an error (could not tell); 64 bad input.\n  \
        break:  0 broken or already free; 1 refused (fresh, no --force) or changed meanwhile; \
        2 an error; 64 bad input.",
    arg_required_else_help = true,
    propagate_version = true
)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,

    /// Log more on stderr: -v what heldlock does (acquired, released), -vv the lock library's
    /// steps, -vvv everything [default: warnings only, such as a stale lock broken]. RUST_LOG
    /// directives apply on top.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a command while holding the lock (released when it ends).
    #[command(
        long_about = "Acquire the lock (waiting until it is free, or up to --wait; breaking it if \
        its holder is judged dead), run the command while a heartbeat keeps the lock fresh, \
        release the lock when the command ends, and exit with the command's status (128+N if it \
        was killed by signal N).\n\n\
        As with flock(1): without -w/--wait, heldlock waits until it gets the lock (bounded only \
        by the lock library's longest wait, 365 days); -w 0 is -n. The command is either \
        `-- COMMAND [ARGS]...` or `-c 'shell command'`, run by `sh -c` (util-linux flock uses \
        $SHELL; heldlock always uses sh, so a script behaves the same whoever runs it).\n\n\
        The lock's directory must exist; with --mkdir, heldlock creates it and its missing \
        parents.\n\n\
        Signals: while waiting for the lock, one that would end a process ends the wait \
        (exit 128+N). While the command runs, heldlock forwards to it every catchable signal \
        sent to heldlock alone (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, \
        SIGCONT...), survives it, and exits with the command's status; a key typed on the \
        terminal (Ctrl-C, Ctrl-\\, Ctrl-Z) already reaches the command, so it is not sent \
        twice. SIGTSTP stops heldlock along with the command. The lock is \
        released however the command ends. The command inherits a descriptor of the lock file \
        and the kernel lock held on it, as with flock(1): if heldlock itself is killed, \
        contenders on this host keep waiting while any process of the command runs (contenders \
        on other hosts see only the heartbeat, which stops with heldlock). The command sees \
        HELDLOCK_PATH (the absolute lock path; for an etcd lock, the lock as given), \
        HELDLOCK_OWNER (the owner id in the lock; unset when running unlocked) and \
        HELDLOCK_TOKEN (the grant's fencing token, a decimal number greater than every earlier \
        grant's: the key's create revision on etcd; unset for a lock file, which has no \
        token, and when running unlocked).\n\n\
        An etcd lock (etcd://HOST:PORT[,HOST:PORT...]/NAME; a build with the `etcd` feature) \
        is the key NAME, held under an etcd lease whose TTL is --stale (at least etcd's \
        minimum, about 2 s): a holder that dies loses it when etcd ends the lease, and no \
        contender ever breaks it. --mkdir does not apply, and the command inherits no kernel \
        lock: if heldlock is killed, the lease lapses after its TTL even while the command \
        runs. Credentials: --etcd-user (or HELDLOCK_ETCD_USER) and the password in \
        HELDLOCK_ETCD_PASSWORD. etcd unreachable, or refusing the credentials, is an error \
        (exit 1; with --best-effort, a warning and an unlocked run).\n\n\
        If the lock is lost while the command runs (a peer judged it stale and broke it), \
        heldlock warns on stderr but does not stop the command: killing it half-way could do \
        more harm than finishing, and only the command knows how to stop safely.\n\n\
        When the lock cannot be had, heldlock exits 75 (or the -E code) naming the holder, or \
        with --best-effort warns and runs the command unlocked. Only a lock file (empty, a lock \
        record, or the start of one left by a crash) is ever broken: any other file, a symbolic \
        link, FIFO, device or directory at the lock path is an error at once (exit 1), and is \
        never touched.\n\n\
        Exit codes: the command's status (128+N if it was killed by signal N); 75, or N given \
        by -E, when the lock is busy (held by someone else for all of the wait, or at once with \
        -n); 127 the command was not found, 126 it could not be started; 1 an error that \
        waiting would not cure (a missing or unusable directory, something other than a lock at \
        the lock path, an I/O failure, etcd unreachable or refusing); 64 bad input; 128+N a \
        signal N ended the wait."
    )]
    #[command(
        override_usage = "heldlock run [OPTIONS] <LOCK> -- <COMMAND> [ARGS]...\n       \
                          heldlock run [OPTIONS] <LOCK> -c <SHELL_COMMAND>"
    )]
    Run(RunArgs),
    /// Show whether the lock is free or who holds it (exit 0 free, 1 held, 2 error).
    #[command(
        long_about = "Show whether the lock is free or who holds it: pid, owner, host, when it \
        was taken, how long since its last refresh, and whether it is stale by --stale (an \
        etcd lock never is: etcd removes it when its holder's lease ends).\n\n\
        With --json, exactly one JSON object is printed on stdout in every outcome, errors \
        included (then `state` is \"error\" and `error` says why); its keys are the same \
        whatever the state, absent values being null (see docs/cli.md).\n\n\
        Exit codes: 0 free; 1 held (stale or not: `stale` says which); 2 an error (the lock \
        could not be inspected, or what stands at the lock path is not a lock); 64 bad input."
    )]
    Status(StatusArgs),
    /// Break the lock if it is stale, or with --force even if it is fresh.
    #[command(
        long_about = "Break the lock if it has not been refreshed for --stale (by this host's \
        wall clock), through the safe protocol: the lock is removed only if it is still exactly \
        the one inspected, never a replacement. With --force a fresh lock is broken too, after \
        printing whose it was; its holder finds the lock lost at its next heartbeat. A file \
        that is not a lock (a data file, a symbolic link, ...) is refused unless --force is \
        given, which removes it (a link itself, never its target).\n\n\
        An etcd lock is never stale (etcd removes it when its holder's lease ends, so a key \
        that is there has a live lease): break refuses it unless --force, which deletes the key \
        if it is still the one inspected.\n\n\
        With --json, exactly one JSON object is printed on stdout in every outcome, errors \
        included (see docs/cli.md).\n\n\
        Exit codes: 0 the lock was broken or was already free; 1 refused (fresh, without \
        --force) or the lock changed meanwhile; 2 an error (the lock could not be inspected or \
        removed, or what stands at the lock path is not a lock); 64 bad input."
    )]
    Break(BreakArgs),
}

/// `heldlock run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Judge a lock stale (its holder dead) once it has not been refreshed for this long.
    #[arg(long, value_name = "D", default_value = "30s", value_parser = duration::parse_positive)]
    pub(crate) stale: Duration,

    /// Give up after waiting this long for a busy lock: seconds as flock takes them (5, 0.5)
    /// or a human duration (300ms, 2s); 0 is --no-wait [default: wait until the lock is had,
    /// like flock, bounded only by the library's longest wait, 365 days; the library's own
    /// LockOptions::max_wait defaults to 5 s].
    #[arg(
        short = 'w',
        long,
        visible_alias = "timeout",
        value_name = "SECONDS|D",
        value_parser = duration::parse_wait,
        conflicts_with = "no_wait"
    )]
    pub(crate) wait: Option<Duration>,

    /// Try once and give up at once when the lock is busy (flock's -n).
    #[arg(short = 'n', long, visible_aliases = ["nb", "nonblock"])]
    pub(crate) no_wait: bool,

    /// The exit code when the lock is busy (held by someone else for the whole wait, or at
    /// once with -n), as flock's -E. Other failures keep their own codes.
    #[arg(
        short = 'E',
        long,
        value_name = "N",
        default_value_t = exit::EX_TEMPFAIL,
        value_parser = clap::value_parser!(u8)
    )]
    pub(crate) conflict_exit_code: u8,

    /// Run this command line through `sh -c` instead of `-- COMMAND [ARGS]...` (flock's -c).
    #[arg(
        short = 'c',
        long = "command",
        value_name = "SHELL_COMMAND",
        value_parser = clap::value_parser!(OsString),
        conflicts_with = "command"
    )]
    pub(crate) shell_command: Option<OsString>,

    /// Take an exclusive lock: the only kind heldlock has (accepted for flock's -x/-e).
    #[arg(short = 'x', long, short_alias = 'e')]
    pub(crate) exclusive: bool,

    /// Create the lock's directory and its missing parents (without it, a missing directory
    /// is an error).
    #[arg(long)]
    pub(crate) mkdir: bool,

    /// How often to look at a busy lock again.
    #[arg(long, value_name = "D", default_value = "50ms", value_parser = duration::parse_positive)]
    pub(crate) poll: Duration,

    /// How often to refresh the held lock [default: stale/3, at least 100ms, at most stale/2].
    #[arg(long, value_name = "D", value_parser = duration::parse_positive)]
    pub(crate) heartbeat: Option<Duration>,

    /// Bounded waiting: once this heldlock has waited D, the other `heldlock run`s and
    /// programs of this host that pass the same option let it have the lock next instead of
    /// taking it back themselves [default: off: fastest, but a wait is bounded only by chance].
    #[arg(long, value_name = "D", value_parser = duration::parse)]
    pub(crate) bounded_wait: Option<Duration>,

    /// When the lock cannot be had, warn and run the command without it.
    #[arg(long)]
    pub(crate) best_effort: bool,

    /// The lock file (its directory must exist, or pass --mkdir), or an etcd lock:
    /// etcd://HOST:PORT[,HOST:PORT...]/NAME.
    #[arg(value_name = "LOCK", value_parser = clap::value_parser!(OsString))]
    pub(crate) lock: OsString,

    #[command(flatten)]
    pub(crate) etcd: EtcdArgs,

    /// The command to run and its arguments (after `--`), unless -c is given.
    #[arg(
        value_name = "COMMAND",
        required_unless_present = "shell_command",
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_parser = clap::value_parser!(OsString)
    )]
    pub(crate) command: Vec<OsString>,
}

/// `heldlock status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The lock file, or an etcd lock: etcd://HOST:PORT[,HOST:PORT...]/NAME.
    #[arg(value_name = "LOCK", value_parser = clap::value_parser!(OsString))]
    pub(crate) lock: OsString,

    #[command(flatten)]
    pub(crate) etcd: EtcdArgs,

    /// Print one JSON object instead of text, in every outcome (see docs/cli.md).
    #[arg(long)]
    pub(crate) json: bool,

    /// Report the lock as stale once it has not been refreshed for this long.
    #[arg(long, value_name = "D", default_value = "30s", value_parser = duration::parse_positive)]
    pub(crate) stale: Duration,
}

/// `heldlock break`.
#[derive(Debug, Args)]
pub(crate) struct BreakArgs {
    /// The lock file, or an etcd lock: etcd://HOST:PORT[,HOST:PORT...]/NAME.
    #[arg(value_name = "LOCK", value_parser = clap::value_parser!(OsString))]
    pub(crate) lock: OsString,

    #[command(flatten)]
    pub(crate) etcd: EtcdArgs,

    /// Break only a lock not refreshed for this long.
    #[arg(long, value_name = "D", default_value = "30s", value_parser = duration::parse_positive)]
    pub(crate) stale: Duration,

    /// Break the lock even if it is fresh (after printing whose it was), or
    /// remove what stands at the lock path even if it is not a lock.
    #[arg(long)]
    pub(crate) force: bool,

    /// Print one JSON object instead of text, in every outcome (see docs/cli.md).
    #[arg(long)]
    pub(crate) json: bool,
}

/// How to reach an etcd lock (`etcd://...`); ignored for a lock file.
#[derive(Debug, Args)]
pub(crate) struct EtcdArgs {
    /// The etcd user for an etcd lock; its password is read from HELDLOCK_ETCD_PASSWORD
    /// (never from the command line).
    #[arg(long, value_name = "USER", env = "HELDLOCK_ETCD_USER")]
    pub(crate) etcd_user: Option<String>,
}

/// Checks a lock path given on the command line: an empty one is bad input.
///
/// # Errors
///
/// A usage message when `lock` is empty. The library checks the rest (a
/// path that names a directory, a NUL byte, a file name too long).
pub(crate) fn lock_path(lock: &OsString) -> Result<PathBuf, exit::CliError> {
    if lock.is_empty() {
        return Err(exit::CliError::Usage(
            "the lock path is empty; give the path of a lock file, e.g. state/db.lock".to_owned(),
        ));
    }
    Ok(PathBuf::from(lock))
}

/// Parses the command line.
///
/// # Errors
///
/// The exit code to end with when parsing ended the program: 0 after
/// `--help` or `--version`, 64 after a usage error, which is reported as one
/// line, `heldlock: <what is wrong> (see heldlock --help)`.
pub(crate) fn parse() -> Result<Cli, u8> {
    let args: Vec<OsString> = std::env::args_os().collect();
    match Cli::try_parse_from(&args) {
        Ok(cli) => Ok(cli),
        Err(error) => match error.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                // Nothing useful is left to do if stdout is gone.
                let _ = error.print();
                Err(exit::SUCCESS)
            }
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                let _ = error.print();
                Err(exit::EX_USAGE)
            }
            _ => {
                let message = format!("{} (see heldlock --help)", one_line(&error));
                // `status --json` and `break --json` print one object in
                // every outcome, bad input included.
                if let Some(command) = json::requested(args.get(1..).unwrap_or_default()) {
                    outln!("{}", json::usage_error(command, &message));
                }
                errln!("heldlock: {message}");
                Err(exit::EX_USAGE)
            }
        },
    }
}

/// The first paragraph of clap's report, on one line, without its
/// `error: ` prefix.
fn one_line(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let text = rendered
        .lines()
        .map(str::trim)
        .take_while(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    text.strip_prefix("error: ").unwrap_or(&text).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn run_args(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("heldlock").chain(args.iter().copied()))?;
        match cli.command {
            Command::Run(run) => Ok(run),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn run_takes_the_command_after_the_separator() -> Result<(), clap::Error> {
        let run = run_args(&[
            "run", "--stale", "2m", "x.lock", "--", "sh", "-c", "echo hi",
        ])?;
        assert_eq!(run.stale, Duration::from_secs(120));
        assert_eq!(
            run.wait, None,
            "without -w, run waits until it gets the lock"
        );
        assert_eq!(run.conflict_exit_code, 75);
        assert_eq!(run.lock, "x.lock");
        assert_eq!(run.command, ["sh", "-c", "echo hi"]);
        Ok(())
    }

    #[test]
    fn bounded_waiting_is_off_unless_asked_for() -> Result<(), clap::Error> {
        assert_eq!(
            run_args(&["run", "x.lock", "--", "true"])?.bounded_wait,
            None
        );
        let run = run_args(&["run", "--bounded-wait", "5ms", "x.lock", "--", "true"])?;
        assert_eq!(run.bounded_wait, Some(Duration::from_millis(5)));
        let run = run_args(&["run", "--bounded-wait", "0s", "x.lock", "--", "true"])?;
        assert_eq!(
            run.bounded_wait,
            Some(Duration::ZERO),
            "zero: yield every time"
        );
        assert!(run_args(&["run", "--bounded-wait", "soon", "x.lock", "--", "true"]).is_err());
        Ok(())
    }

    #[test]
    fn options_after_the_lock_still_count() -> Result<(), clap::Error> {
        let run = run_args(&["run", "x.lock", "--no-wait", "--", "ls", "--all"])?;
        assert!(run.no_wait);
        assert_eq!(run.command, ["ls", "--all"]);
        Ok(())
    }

    #[test]
    fn flock_short_options_parse() -> Result<(), clap::Error> {
        let run = run_args(&["run", "-w", "0.5", "-E", "3", "x.lock", "-c", "echo hi"])?;
        assert_eq!(run.wait, Some(Duration::from_millis(500)));
        assert_eq!(run.conflict_exit_code, 3);
        assert_eq!(run.shell_command.as_deref(), Some("echo hi".as_ref()));
        assert!(run.command.is_empty());
        let run = run_args(&["run", "-n", "-x", "--mkdir", "x.lock", "--", "true"])?;
        assert!(run.no_wait && run.exclusive && run.mkdir);
        let run = run_args(&["run", "--timeout", "300ms", "x.lock", "--", "true"])?;
        assert_eq!(run.wait, Some(Duration::from_millis(300)));
        Ok(())
    }

    #[test]
    fn usage_errors_render_on_one_line() {
        for args in [
            &["run", "x.lock"][..],
            &["run", "x.lock", "--"],
            &["run", "--wait", "soon", "x.lock", "--", "true"],
            &["run", "--wait", "1s", "--no-wait", "x.lock", "--", "true"],
            &["run", "x.lock", "-c", "true", "--", "true"],
            &["run", "-E", "256", "x.lock", "--", "true"],
            &["frobnicate"],
        ] {
            let error = run_args(args).err();
            let Some(error) = error else {
                panic!("{args:?} parsed");
            };
            let line = one_line(&error);
            assert!(!line.is_empty() && !line.contains('\n'), "{line:?}");
            assert!(!line.starts_with("error:"), "{line:?}");
        }
    }
}
