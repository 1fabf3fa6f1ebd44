//! The signals heldlock catches (SIGINT, SIGTERM, SIGHUP) and their
//! forwarding to the command.
//!
//! Catching them replaces their default action (ending heldlock at once,
//! which would leave the lock to go stale and the command running): while
//! waiting for the lock, one ends the wait (exit 128+N); while the command
//! runs, each is forwarded to it and heldlock keeps waiting for it to end,
//! then releases the lock.
//!
//! On a terminal, Ctrl-C sends SIGINT to the whole foreground process group,
//! so the command gets it from the terminal and again from heldlock;
//! programs treat a repeated SIGINT like a single one.

use std::io;

use rustix::process::{Pid, Signal, kill_process};
use tokio::signal::unix::{SignalKind, signal};

/// The signals heldlock catches, as streams.
#[derive(Debug)]
pub(crate) struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Starts catching SIGINT, SIGTERM and SIGHUP. Call it before anything
    /// that must be undone (acquiring, spawning), so that no signal can end
    /// heldlock without cleanup.
    ///
    /// # Errors
    ///
    /// When a handler cannot be installed.
    pub(crate) fn install() -> io::Result<Self> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for the next caught signal. Cancel safe.
    pub(crate) async fn recv(&mut self) -> Signal {
        tokio::select! {
            Some(()) = self.interrupt.recv() => Signal::INT,
            Some(()) = self.terminate.recv() => Signal::TERM,
            Some(()) = self.hangup.recv() => Signal::HUP,
            // The streams end only when the runtime shuts down.
            else => std::future::pending().await,
        }
    }
}

/// Sends `signal` to the process `pid` (the command), if it still runs.
///
/// # Errors
///
/// When the signal could not be sent (the command already ended and was
/// reaped: `ESRCH`).
pub(crate) fn forward(pid: Option<u32>, signal: Signal) -> io::Result<()> {
    let pid = pid
        .and_then(|pid| i32::try_from(pid).ok())
        .and_then(Pid::from_raw)
        .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
    kill_process(pid, signal)?;
    Ok(())
}
