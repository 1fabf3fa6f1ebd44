//! Exit codes, and the error type every command returns.
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | success (`run`: the command exited 0; `status`: free; `break`: broken or already free) |
//! | 1 | `status`: held; `break`: refused (fresh) or the lock changed meanwhile; `run`: an error that waiting would not cure (a missing or unusable directory, a directory or a non-lock at the lock path, an I/O failure, an etcd lock's cluster unreachable or refusing) |
//! | 2 | `status`, `break`: an error (the lock could not be inspected or removed, or what stands at the lock path is not a lock, or an etcd lock's cluster is unreachable or refusing) |
//! | 64 | bad input (`EX_USAGE`): a bad duration or option, a missing command, an empty lock path, `--heartbeat` not below `--stale` |
//! | 75 | `run`: the lock could not be had (`EX_TEMPFAIL`; `-E N` changes it to N): held by someone else for all of `--wait`, or at once with `--no-wait`; also (always 75) a contention-like I/O failure (busy, would block) |
//! | 126, 127 | `run`: the command could not be started (127: not found, 126: any other reason), as `env` and `timeout` do |
//! | 128 + N | `run`: the command was killed by signal N, or heldlock received signal N while still waiting for the lock |
//! | other | `run`: the command's own exit status |

use std::fmt;
use std::io;

/// Success.
pub(crate) const SUCCESS: u8 = 0;
/// A refusal, a held lock (`status`), or an error that waiting would not cure.
pub(crate) const FAILURE: u8 = 1;
/// `status` and `break`: an error, as opposed to a held lock or a refusal.
pub(crate) const ERROR: u8 = 2;
/// Bad input (`EX_USAGE` of `sysexits.h`).
pub(crate) const EX_USAGE: u8 = 64;
/// The lock could not be had; try again later (`EX_TEMPFAIL` of `sysexits.h`).
pub(crate) const EX_TEMPFAIL: u8 = 75;
/// The command was found but could not be started.
pub(crate) const CANNOT_EXECUTE: u8 = 126;
/// The command was not found.
pub(crate) const NOT_FOUND: u8 = 127;
/// Added to a signal number for "ended by that signal".
pub(crate) const SIGNAL_BASE: u8 = 128;

/// The exit code for "ended by signal `signal`", as shells report it.
pub(crate) fn for_signal(signal: i32) -> u8 {
    u8::try_from(signal)
        .ok()
        .and_then(|n| SIGNAL_BASE.checked_add(n))
        .unwrap_or(u8::MAX)
}

/// Why a command failed; each variant has its exit code
/// ([`exit_code`](CliError::exit_code)) and a one-line message
/// ([`Display`](fmt::Display)), printed as `heldlock: <message>`.
#[derive(Debug)]
pub(crate) enum CliError {
    /// Bad input: exit 64.
    Usage(String),
    /// The lock is held by someone else: exit `code` (75 unless `-E`).
    Busy {
        /// One line naming the holder.
        message: String,
        /// The exit code for a busy lock.
        code: u8,
    },
    /// The lock library failed while locking.
    /// Exit 75 when the failure looks like contention, else 1.
    Lock(heldlock::Error),
    /// `status` or `break` could not inspect or break the lock: exit 2.
    Query(heldlock::Error),
    /// The lock's directory is missing or unusable (`run`, before locking):
    /// exit 1. The message says what to do.
    Directory(String),
    /// The command could not be started: exit 127 when not found, else 126.
    Spawn {
        /// The program as given.
        program: String,
        /// Why it could not be started.
        source: io::Error,
    },
    /// An etcd lock's cluster could not be reached, or refused us: exit
    /// `code` (1 for `run`, 2 for `status` and `break`). The message names
    /// the lock and says what to check.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    Remote {
        /// One line.
        message: String,
        /// The exit code.
        code: u8,
    },
    /// Some other I/O failure of heldlock itself (signal handlers, the
    /// runtime, waiting for the command): exit 1.
    Io {
        /// What heldlock was doing.
        action: &'static str,
        /// The failure.
        source: io::Error,
    },
}

impl CliError {
    /// The process exit code for this error.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => EX_USAGE,
            CliError::Busy { code, .. } => *code,
            CliError::Lock(error) => lock_error_code(error),
            CliError::Query(error) => match lock_error_code(error) {
                EX_USAGE => EX_USAGE,
                _ => ERROR,
            },
            CliError::Directory(_) => FAILURE,
            CliError::Spawn { source, .. } if source.kind() == io::ErrorKind::NotFound => NOT_FOUND,
            CliError::Spawn { .. } => CANNOT_EXECUTE,
            CliError::Io { .. } => FAILURE,
            CliError::Remote { code, .. } => *code,
        }
    }

    /// Wraps an error of the lock library, telling bad input (an invalid
    /// option or path: exit 64) from failures of the lock itself.
    pub(crate) fn from_lock(error: heldlock::Error) -> Self {
        match error {
            heldlock::Error::Options(_) | heldlock::Error::InvalidResource { .. } => {
                CliError::Usage(error.to_string())
            }
            other => CliError::Lock(other),
        }
    }
}

/// 75 for a failure that waiting may cure (a timeout, a busy or
/// interrupted file-system call), 64 for bad input, else 1.
fn lock_error_code(error: &heldlock::Error) -> u8 {
    match error {
        heldlock::Error::Timeout { .. } => EX_TEMPFAIL,
        heldlock::Error::Options(_) | heldlock::Error::InvalidResource { .. } => EX_USAGE,
        heldlock::Error::Backend(backend) => match backend.io_kind() {
            Some(
                io::ErrorKind::WouldBlock
                | io::ErrorKind::ResourceBusy
                | io::ErrorKind::Interrupted
                | io::ErrorKind::TimedOut,
            ) => EX_TEMPFAIL,
            _ => FAILURE,
        },
        _ => FAILURE,
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(message)
            | CliError::Busy { message, .. }
            | CliError::Directory(message)
            | CliError::Remote { message, .. } => f.write_str(message),
            CliError::Lock(error) | CliError::Query(error) => write!(f, "{error}"),
            CliError::Spawn { program, source } => {
                write!(f, "cannot run {program:?}: {source}")
            }
            CliError::Io { action, source } => write!(f, "cannot {action}: {source}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_codes_are_offset_by_128() {
        assert_eq!(for_signal(15), 143);
        assert_eq!(for_signal(2), 130);
        assert_eq!(for_signal(-1), u8::MAX);
        assert_eq!(for_signal(1000), u8::MAX);
    }

    #[test]
    fn spawn_errors_follow_env_and_timeout() {
        let missing = CliError::Spawn {
            program: "nope".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        assert_eq!(missing.exit_code(), NOT_FOUND);
        let denied = CliError::Spawn {
            program: "nope".into(),
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        assert_eq!(denied.exit_code(), CANNOT_EXECUTE);
    }
}
