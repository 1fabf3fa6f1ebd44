//! `heldlock run`: acquire the lock, run the command under it, release it.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use heldlock::{FileLock, HeldLock, LockOptions, Released};
use tokio::process::{Child, Command};

use crate::cli::RunArgs;
use crate::directory;
use crate::duration::show;
use crate::exit::{self, CliError};
use crate::signals::{self, Signals};
use crate::target::{self, Target};
use crate::waiting::{self, Wait, Waited};

/// The environment variable that tells the command the lock's path.
pub(crate) const ENV_PATH: &str = "HELDLOCK_PATH";
/// The environment variable that tells the command our owner id (unset when
/// the command runs unlocked).
pub(crate) const ENV_OWNER: &str = "HELDLOCK_OWNER";
/// The environment variable that tells the command the grant's fencing
/// token (unset when the lock gives none, or the command runs unlocked).
pub(crate) const ENV_TOKEN: &str = "HELDLOCK_TOKEN";

/// Runs `heldlock run`; returns the exit code.
///
/// # Errors
///
/// [`CliError::Usage`] for bad options or an empty or malformed lock;
/// [`CliError::Directory`] when the lock's directory is missing (without
/// `--mkdir`) or unusable; [`CliError::Remote`] when an etcd lock's cluster
/// cannot be reached; [`CliError::Busy`] when the lock is held by someone
/// else; [`CliError::Lock`] when the lock failed (these and the directory
/// error only without `--best-effort`); [`CliError::Spawn`] when the
/// command cannot be started.
pub(crate) async fn run(args: RunArgs) -> Result<u8, CliError> {
    let target = target::parse(&args.lock)?;
    let (program, program_args) = command_line(&args)?;
    // Without -w, wait until the lock is had, as flock(1) does; the
    // library's wait is bounded, so its longest one stands for "forever".
    let (max_wait, no_wait) = match args.wait {
        None => (heldlock::MAX_DURATION, args.no_wait),
        Some(Duration::ZERO) => (heldlock::MAX_DURATION, true),
        Some(wait) => (wait, args.no_wait),
    };
    // The library's warnings (a lost lock, a failed heartbeat) reach stderr
    // as `tracing` events (`logs`): a warning hook would print them twice.
    let mut options = LockOptions::new(args.stale)
        .max_wait(max_wait)
        .poll(args.poll);
    if let Some(heartbeat) = args.heartbeat {
        options = options.heartbeat(heartbeat);
    }
    if let Some(bound) = args.bounded_wait {
        options = options.bounded_wait(bound);
    }
    // Bad options are bad input, reported before anything is touched (and
    // never turned into an unlocked run by --best-effort).
    options
        .validate()
        .map_err(|error| CliError::Usage(options_message(&error)))?;
    let shown = args.lock.to_string_lossy().into_owned();
    let (opening, env_path) = match target {
        Target::File(path) => {
            let lock = FileLock::new(&path, options).map_err(|error| match error {
                heldlock::Error::Options(error) => CliError::Usage(options_message(&error)),
                other => CliError::from_lock(other),
            })?;
            let absolute = std::path::absolute(&path).unwrap_or_else(|_| path.clone());
            (Opening::File(lock, path), absolute.into_os_string())
        }
        #[cfg(feature = "etcd")]
        Target::Etcd(etcd) => (Opening::Etcd(etcd, options), args.lock.clone()),
    };
    let mut signals = Signals::install().map_err(|source| CliError::Io {
        action: "install the signal handlers",
        source,
    })?;

    let started = Instant::now();
    let opened = match opening {
        Opening::File(lock, path) => {
            directory::prepare(&path, args.mkdir).map(|()| Opened::File(lock))
        }
        #[cfg(feature = "etcd")]
        Opening::Etcd(etcd, options) => {
            // Connecting is part of the wait: a signal ends it too.
            tokio::select! {
                connected = crate::etcd::lock(&etcd, &args.etcd, options, &shown) => {
                    connected.map(Opened::Etcd)
                }
                signal = signals.interruption() => {
                    return Ok(exit::for_signal(signal.as_raw()));
                }
            }
        }
    };
    let (opened, held) = match opened {
        Err(error @ CliError::Usage(_)) => return Err(error),
        Err(error) if args.best_effort => {
            errln!("heldlock: warning: running the command without the lock: {error}");
            (None, None)
        }
        Err(error) => return Err(error),
        Ok(opened) => {
            let wait = Wait {
                lock: opened.as_lock(),
                shown: &shown,
                stale: args.stale,
                wait: (!no_wait).then_some(max_wait),
                leased: opened.leased(),
            };
            let held = match waiting::acquire(&wait, &mut signals).await {
                Waited::Held(held) => Some(held),
                Waited::Interrupted(signal) => return Ok(exit::for_signal(signal.as_raw())),
                Waited::Busy(message) if args.best_effort => {
                    errln!("heldlock: warning: running the command without the lock: {message}");
                    None
                }
                Waited::Busy(message) => {
                    return Err(CliError::Busy {
                        message,
                        code: args.conflict_exit_code,
                    });
                }
                Waited::Failed(error) if args.best_effort => {
                    errln!("heldlock: warning: running the command without the lock: {error}");
                    None
                }
                Waited::Failed(error) => return Err(CliError::from_lock(error)),
            };
            (Some(opened), held)
        }
    };

    if let Some(held) = &held {
        tracing::info!(
            lock = %shown,
            owner = %held.owner(),
            token = held.fencing_token(),
            // One token per field: `2ms`, not `2 ms`.
            waited = %show(started.elapsed()).replace(' ', ""),
            "acquired the lock; running the command"
        );
    }

    let mut command = Command::new(&program);
    command.args(&program_args).env(ENV_PATH, &env_path);
    match &held {
        Some(held) => command.env(ENV_OWNER, held.owner().as_str()),
        // A HELDLOCK_OWNER inherited from an outer `heldlock run` is not ours.
        None => command.env_remove(ENV_OWNER),
    };
    // Likewise an inherited HELDLOCK_TOKEN: unset when this grant has none.
    match held.as_ref().and_then(HeldLock::fencing_token) {
        Some(token) => command.env(ENV_TOKEN, token.to_string()),
        None => command.env_remove(ENV_TOKEN),
    };
    // The command inherits a descriptor of the lock file, and with it the
    // kernel lock taken on it: should heldlock die first, contenders on
    // this host still see the lock held for as long as any process of the
    // command runs (as with flock(1)). Ours is closed once it has started.
    // (An etcd lock has nothing to inherit: its lease is heldlock's.)
    let inherited = match (&held, &opened) {
        (Some(held), Some(Opened::File(lock))) => match lock.inheritable_descriptor(held) {
            Ok(fd) => Some(fd),
            Err(error) => {
                errln!(
                    "heldlock: warning: the command cannot inherit the lock file ({error}); \
                     the lock is held only while heldlock itself runs"
                );
                None
            }
        },
        _ => None,
    };
    let spawned = command.spawn();
    drop(inherited);
    let status = match spawned {
        Ok(mut child) => supervise(&mut child, held.as_ref(), &mut signals, &shown).await,
        Err(source) => Err(CliError::Spawn {
            program: program.to_string_lossy().into_owned(),
            source,
        }),
    };
    if let Ok(status) = &status {
        tracing::info!(code = code_of(*status), "the command exited");
    }
    if let Some(held) = held {
        release(held, &shown).await;
    }
    Ok(code_of(status?))
}

/// A lock `run` is about to open: a file lock is made at once, an etcd lock
/// connects once the signals are watched.
enum Opening {
    File(FileLock, PathBuf),
    #[cfg(feature = "etcd")]
    Etcd(target::Etcd, LockOptions),
}

/// A lock `run` can wait for.
enum Opened {
    File(FileLock),
    #[cfg(feature = "etcd")]
    Etcd(heldlock::etcd::EtcdLock),
}

impl Opened {
    fn as_lock(&self) -> &heldlock::Lock {
        match self {
            Opened::File(lock) => lock.as_lock(),
            #[cfg(feature = "etcd")]
            Opened::Etcd(lock) => lock.as_lock(),
        }
    }

    /// Whether it is an etcd lock.
    fn leased(&self) -> bool {
        match self {
            Opened::File(_) => false,
            #[cfg(feature = "etcd")]
            Opened::Etcd(_) => true,
        }
    }
}

/// Waits for the command to end, forwarding to it the signals it did not
/// get itself (see [`signals`]) and warning once if the lock is lost
/// meanwhile. The command is never killed by heldlock: only it knows how to
/// stop safely half-way, and a lost lock does not undo what it already did.
async fn supervise(
    child: &mut Child,
    held: Option<&HeldLock>,
    signals: &mut Signals,
    shown: &str,
) -> Result<ExitStatus, CliError> {
    let lost = async {
        match held {
            Some(held) => held.lost().await,
            None => std::future::pending().await,
        }
    };
    let mut lost = std::pin::pin!(lost);
    let mut lost_reported = false;
    loop {
        tokio::select! {
            status = child.wait() => {
                return status.map_err(|source| CliError::Io {
                    action: "wait for the command",
                    source,
                });
            }
            caught = signals.recv() => {
                if let Err(error) = signals::relay(caught, child.id()) {
                    // ESRCH: it just ended, and `wait` reports it next.
                    if error.kind() != io::ErrorKind::NotFound
                        && error.raw_os_error() != Some(rustix::io::Errno::SRCH.raw_os_error())
                    {
                        errln!(
                            "heldlock: warning: could not forward signal {} to the command: {error}",
                            caught.signal.as_raw()
                        );
                    }
                }
            }
            () = &mut lost, if !lost_reported => {
                lost_reported = true;
                errln!(
                    "heldlock: warning: lost the lock {} while the command runs (a peer judged it \
                     stale and broke it, its etcd lease ended, or it was removed); the command \
                     keeps running unprotected",
                    shown
                );
            }
        }
    }
}

/// Releases the lock after the command ended; failures are warnings (the
/// command's status is what heldlock exits with).
async fn release(held: HeldLock, shown: &str) {
    match held.release().await {
        Ok(Released::Released) => {
            tracing::info!(lock = %shown, "released the lock");
        }
        // NotOurs, Absent: the library already warned (a log line on stderr).
        Ok(_) => {}
        Err(error) => errln!(
            "heldlock: warning: could not release the lock {}; it goes stale since its heartbeat stopped: {error}",
            shown
        ),
    }
}

/// The exit code that reports `status`: its code, or 128+N for signal N.
fn code_of(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(exit::FAILURE),
        (None, Some(signal)) => exit::for_signal(signal),
        (None, None) => exit::FAILURE,
    }
}

/// The program to run and its arguments: `sh -c <line>` for `-c`, else
/// the words after `--`.
///
/// # Errors
///
/// A usage error when the command is missing or empty.
fn command_line(args: &RunArgs) -> Result<(OsString, Vec<OsString>), CliError> {
    if let Some(line) = &args.shell_command {
        if line.is_empty() {
            return Err(CliError::Usage(
                "the -c shell command is empty; give one, e.g. -c 'make deploy'".to_owned(),
            ));
        }
        return Ok((
            OsString::from("sh"),
            vec![OsString::from("-c"), line.clone()],
        ));
    }
    match args.command.split_first() {
        Some((program, rest)) if !program.is_empty() => Ok((program.clone(), rest.to_vec())),
        _ => Err(CliError::Usage(
            "the command to run is missing or empty; give it after `--`, or a shell command \
             with -c"
                .to_owned(),
        )),
    }
}

/// The command-line flag of a library option.
fn flag(option: &str) -> &str {
    match option {
        "max_wait" => "--wait",
        "stale" => "--stale",
        "poll" => "--poll",
        "heartbeat" => "--heartbeat",
        other => other,
    }
}

/// An invalid option, said in terms of the command line: the library names
/// its options (`max_wait`), the command line has flags (`--wait`), and the
/// CLI's defaults differ from the library's. Durations are shown rounded.
fn options_message(error: &heldlock::OptionsError) -> String {
    match error {
        heldlock::OptionsError::OutOfRange {
            option: "max_wait",
            value,
            ..
        } => format!(
            "invalid --wait: it must be at most 365 days; got {}; \
             omit it to wait until the lock is free",
            show(*value)
        ),
        heldlock::OptionsError::OutOfRange { option, value, .. } => format!(
            "invalid {}: it must be more than 0 and at most 365 days; got {}",
            flag(option),
            show(*value)
        ),
        heldlock::OptionsError::HeartbeatNotBelowStale {
            heartbeat,
            stale,
            default,
        } => format!(
            "invalid --heartbeat: it must be shorter than --stale ({}); got {}; \
             omit it to use the default of {} for this --stale",
            show(*stale),
            show(*heartbeat),
            show(*default)
        ),
        _ => error.to_string(),
    }
}
