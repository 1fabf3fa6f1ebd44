//! The signals heldlock catches, and what it does with each: while waiting
//! for the lock, one that would end a process ends the wait (exit 128+N);
//! while the command runs, each is relayed to it unless it already got it,
//! and heldlock keeps waiting for it to end, then releases the lock.
//!
//! Catching them replaces their default action (ending heldlock at once,
//! which would leave the lock to go stale and the command running). Every
//! catchable signal is caught except those heldlock leaves alone on purpose:
//! the faults of its own code (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP,
//! SIGSYS), SIGCHLD (the runtime's, to reap the command) and SIGPIPE (which
//! Rust programs ignore). SIGKILL and SIGSTOP cannot be caught. Real-time
//! signals (SIGRTMIN..SIGRTMAX) are not caught: their default action still
//! ends heldlock.
//!
//! # Who already got the signal
//!
//! On a terminal, Ctrl-C, Ctrl-\ and Ctrl-Z make the kernel send SIGINT,
//! SIGQUIT or SIGTSTP to the whole foreground process group, and a resized
//! window or a hang-up sends SIGWINCH or SIGHUP the same way. The command
//! runs in heldlock's process group, so it got the signal itself; relaying
//! it would deliver it twice. Such signals are told apart by their origin
//! (`si_code` `SI_KERNEL`, as sudo does): a kernel-sent signal is relayed
//! only when the command has moved to another process group. A signal sent
//! by a process (`kill(2)`, `sigqueue(3)`: `SI_USER`, `SI_QUEUE`) reached
//! heldlock alone and is relayed, unless the command sent it itself.
//!
//! # Stopping
//!
//! SIGTSTP, SIGTTIN and SIGTTOU stop heldlock (after relaying them when the
//! command did not get them), so that a shell's job control sees the job
//! stopped; SIGCONT resumes both (a shell's `fg` sends it to the whole
//! group; one sent to heldlock alone is relayed). While heldlock is
//! stopped, so is its heartbeat: a lock whose holder stays stopped longer
//! than its stale time may be broken by a contender on another host
//! (contenders on this host still see the kernel lock the command holds).

use std::io;

use rustix::process::{Pid, Signal, getpgid, getpgrp, getpid, kill_process};
use signal_hook::iterator::SignalsInfo;
use signal_hook::iterator::exfiltrator::WithOrigin;
use signal_hook::low_level::siginfo::{Cause, Origin};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

/// The signals heldlock catches (see the module's documentation).
const CAUGHT: &[Signal] = &[
    Signal::HUP,
    Signal::INT,
    Signal::QUIT,
    Signal::ABORT,
    Signal::USR1,
    Signal::USR2,
    Signal::ALARM,
    Signal::TERM,
    Signal::CONT,
    Signal::TSTP,
    Signal::TTIN,
    Signal::TTOU,
    Signal::URG,
    Signal::XCPU,
    Signal::XFSZ,
    Signal::VTALARM,
    Signal::PROF,
    Signal::WINCH,
    Signal::IO,
    #[cfg(any(target_os = "linux", target_os = "android"))]
    Signal::STKFLT,
    #[cfg(any(target_os = "linux", target_os = "android"))]
    Signal::POWER,
];

/// The signals a terminal sends to its foreground process group.
const FROM_TERMINAL: &[Signal] = &[
    Signal::INT,
    Signal::QUIT,
    Signal::TSTP,
    Signal::HUP,
    Signal::CONT,
    Signal::WINCH,
];

/// A caught signal and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Caught {
    /// The signal.
    pub(crate) signal: Signal,
    /// Sent by the kernel (`SI_KERNEL`): a terminal key, a hang-up, a window
    /// resize, or a limit of heldlock's own.
    pub(crate) by_kernel: bool,
    /// The process that sent it with `kill(2)` or `sigqueue(3)`, if known.
    pub(crate) sender: Option<i32>,
}

impl Caught {
    fn from_origin(origin: &Origin) -> Option<Self> {
        Some(Caught {
            signal: Signal::from_named_raw(origin.signal)?,
            by_kernel: matches!(origin.cause, Cause::Kernel),
            sender: origin.process.as_ref().map(|process| process.pid),
        })
    }
}

/// What a signal does to a process that does not catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DefaultAction {
    /// Ends the process (with or without a core dump).
    End,
    /// Stops the process until SIGCONT.
    Stop,
    /// Nothing.
    Ignore,
}

fn default_action(signal: Signal) -> DefaultAction {
    if [Signal::TSTP, Signal::TTIN, Signal::TTOU].contains(&signal) {
        DefaultAction::Stop
    } else if [Signal::CONT, Signal::WINCH, Signal::URG].contains(&signal) {
        DefaultAction::Ignore
    } else {
        DefaultAction::End
    }
}

/// The caught signals, in the order they came.
#[derive(Debug)]
pub(crate) struct Signals {
    caught: UnboundedReceiver<Caught>,
}

impl Signals {
    /// Starts catching the signals (see the module's documentation). Call
    /// it before anything that must be undone (acquiring, spawning), so
    /// that no signal can end heldlock without cleanup. The handlers stay
    /// until heldlock exits.
    ///
    /// # Errors
    ///
    /// When a handler cannot be installed or its thread started.
    pub(crate) fn install() -> io::Result<Self> {
        let mut signals =
            SignalsInfo::<WithOrigin>::new(CAUGHT.iter().map(|signal| signal.as_raw()))?;
        let (sender, caught) = unbounded_channel();
        std::thread::Builder::new()
            .name("heldlock-signals".to_owned())
            .spawn(move || {
                for origin in signals.forever() {
                    if let Some(caught) = Caught::from_origin(&origin)
                        && sender.send(caught).is_err()
                    {
                        break;
                    }
                }
            })?;
        Ok(Signals { caught })
    }

    /// Waits for the next caught signal. Cancel safe.
    pub(crate) async fn recv(&mut self) -> Caught {
        match self.caught.recv().await {
            Some(caught) => caught,
            // The thread ends only with the process.
            None => std::future::pending().await,
        }
    }

    /// Waits for a signal that would have ended heldlock had it not caught
    /// it; meanwhile a stop signal stops heldlock, and one whose default
    /// is to be ignored (SIGWINCH, SIGCONT, SIGURG) is ignored. For waiting
    /// for the lock, when there is no command yet. Cancel safe.
    pub(crate) async fn interruption(&mut self) -> Signal {
        loop {
            let caught = self.recv().await;
            match default_action(caught.signal) {
                DefaultAction::End => return caught.signal,
                DefaultAction::Stop => stop_self(),
                DefaultAction::Ignore => {}
            }
        }
    }
}

/// Stops heldlock until SIGCONT, as a stop signal's default action would.
fn stop_self() {
    // Sending a signal to ourselves fails only with a bad signal.
    let _ = kill_process(getpid(), Signal::STOP);
}

/// Whether the command could not have received `caught` itself, so that
/// heldlock must pass it on. `same_group`: the command is in heldlock's
/// process group.
fn must_relay(caught: &Caught, command: Pid, same_group: bool) -> bool {
    if caught.sender == Some(command.as_raw_nonzero().get()) {
        // The command sent it (to heldlock, or to its whole group).
        return false;
    }
    if caught.by_kernel {
        // A terminal sends to the whole foreground group, which holds the
        // command unless it moved elsewhere; other kernel-sent signals
        // (SIGXCPU, SIGXFSZ, SIGIO) are about heldlock itself.
        return !same_group && FROM_TERMINAL.contains(&caught.signal);
    }
    true
}

/// Deals with a signal caught while the command `pid` runs: sends it on
/// when the command could not have received it itself, then stops
/// heldlock too if it is a stop signal.
///
/// # Errors
///
/// When the signal could not be sent (the command already ended and was
/// reaped: `ESRCH`, or `NotFound` without a pid).
pub(crate) fn relay(caught: Caught, pid: Option<u32>) -> io::Result<()> {
    let sent = match pid
        .and_then(|pid| i32::try_from(pid).ok())
        .and_then(Pid::from_raw)
    {
        Some(pid) => {
            // A command that already ended (ESRCH) counts as in our group:
            // there is nobody to send to.
            let same_group = getpgid(Some(pid)).map_or(true, |group| group == getpgrp());
            if must_relay(&caught, pid, same_group) {
                kill_process(pid, caught.signal).map_err(io::Error::from)
            } else {
                Ok(())
            }
        }
        None => Err(io::Error::from(io::ErrorKind::NotFound)),
    };
    if default_action(caught.signal) == DefaultAction::Stop {
        stop_self();
    }
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(raw: i32) -> Pid {
        Pid::from_raw(raw).unwrap()
    }

    const COMMAND: i32 = 4242;

    fn sent_by(signal: Signal, sender: i32) -> Caught {
        Caught {
            signal,
            by_kernel: false,
            sender: Some(sender),
        }
    }

    fn from_kernel(signal: Signal) -> Caught {
        Caught {
            signal,
            by_kernel: true,
            sender: None,
        }
    }

    #[test]
    fn a_terminal_signal_is_not_relayed_to_a_command_in_our_group() {
        for signal in [Signal::INT, Signal::QUIT, Signal::TSTP, Signal::WINCH] {
            assert!(!must_relay(&from_kernel(signal), pid(COMMAND), true));
        }
    }

    #[test]
    fn a_terminal_signal_is_relayed_to_a_command_in_another_group() {
        assert!(must_relay(&from_kernel(Signal::INT), pid(COMMAND), false));
        // SIGXCPU from the kernel is about heldlock's own limit.
        assert!(!must_relay(&from_kernel(Signal::XCPU), pid(COMMAND), false));
    }

    #[test]
    fn a_signal_sent_by_another_process_is_relayed() {
        for signal in [Signal::INT, Signal::TERM, Signal::USR1, Signal::WINCH] {
            assert!(must_relay(&sent_by(signal, 1), pid(COMMAND), true));
        }
        // Origin unknown (a system that does not say): relayed.
        let unknown = Caught {
            signal: Signal::USR2,
            by_kernel: false,
            sender: None,
        };
        assert!(must_relay(&unknown, pid(COMMAND), true));
    }

    #[test]
    fn a_signal_the_command_sent_is_not_sent_back() {
        assert!(!must_relay(
            &sent_by(Signal::USR1, COMMAND),
            pid(COMMAND),
            true
        ));
    }

    #[test]
    fn default_actions() {
        assert_eq!(default_action(Signal::TERM), DefaultAction::End);
        assert_eq!(default_action(Signal::USR1), DefaultAction::End);
        assert_eq!(default_action(Signal::TSTP), DefaultAction::Stop);
        assert_eq!(default_action(Signal::WINCH), DefaultAction::Ignore);
        assert_eq!(default_action(Signal::CONT), DefaultAction::Ignore);
    }
}
