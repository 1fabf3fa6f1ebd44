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
//! A signal that heldlock's caller ignores (`nohup`, a shell's `trap ''`,
//! a background job's SIGINT) is not caught either: it stays ignored, for
//! the wait and for the command, which inherits it ignored, as under
//! flock(1). Catching it would reset it to its default action at the
//! command's `exec`. SIGCHLD, on the contrary, must not stay ignored: the
//! kernel would then reap the command itself, and its exit status would be
//! lost. heldlock puts a handler of its own on it, which the command's
//! `exec` resets to the default, as flock(1) does.
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

use std::collections::VecDeque;
use std::io;
use std::mem::ManuallyDrop;

use rustix::process::{Pid, Signal, getpgid, getpgrp, getpid, kill_process};
use signal_hook::iterator::backend::SignalDelivery;
use signal_hook::iterator::exfiltrator::WithOrigin;
use signal_hook::low_level::siginfo::{Cause, Origin};
use tokio::net::UnixStream;

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
///
/// The handlers note each signal (with its origin) and wake the runtime
/// through a socket pair that the runtime watches, so no thread of its own
/// waits for them: starting one is a noticeable part of a short `heldlock
/// run`, and a signal is only ever acted on by the task that awaits
/// [`recv`](Self::recv) anyway.
#[derive(Debug)]
pub(crate) struct Signals {
    /// Never dropped: the handlers stay until heldlock exits. Dropping it
    /// would unregister them one by one at the end of every run, which
    /// costs more than all the rest of heldlock's teardown, for nothing:
    /// exiting follows.
    delivery: ManuallyDrop<SignalDelivery<UnixStream, WithOrigin>>,
    /// Signals taken from `delivery` and not yet returned by `recv`: one
    /// wake-up may bring several, and `recv` returns one at a time.
    caught: VecDeque<Caught>,
}

/// The signals this process started with ignored, as a mask (bit `n - 1`
/// for signal `n`): Linux reports them in `/proc/self/stat` (its 33rd
/// field, `sigignore`, after the command name in parentheses, which may
/// itself hold spaces and parentheses). None where that cannot be read.
fn ignored_at_start() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| sigignore_of(&stat))
        .unwrap_or(0)
}

/// The `sigignore` field of a `/proc/<pid>/stat` line.
fn sigignore_of(stat: &str) -> Option<u64> {
    let end_of_name = stat.rfind(')')?;
    // Field 3 (the state) comes first after the name.
    stat.get(end_of_name + 2..)?
        .split(' ')
        .nth(33 - 3)?
        .parse()
        .ok()
}

/// Whether signal `raw` is in `mask` (see [`ignored_at_start`]).
fn is_in(mask: u64, raw: i32) -> bool {
    (1..=64).contains(&raw) && mask & (1u64 << (raw - 1)) != 0
}

impl Signals {
    /// Starts catching the signals (see the module's documentation). Call
    /// it before anything that must be undone (acquiring, spawning), so
    /// that no signal can end heldlock without cleanup, and within the
    /// runtime (the socket that wakes it is registered with its driver).
    /// The handlers stay until heldlock exits.
    ///
    /// # Errors
    ///
    /// When the socket pair cannot be made or registered, or a handler
    /// cannot be installed.
    pub(crate) fn install() -> io::Result<Self> {
        let (read, write) = std::os::unix::net::UnixStream::pair()?;
        // The handlers write with MSG_DONTWAIT; the runtime reads until
        // the socket would block.
        read.set_nonblocking(true)?;
        let read = UnixStream::from_std(read)?;
        let ignored = ignored_at_start();
        let delivery = SignalDelivery::with_pipe(
            read,
            write,
            WithOrigin::default(),
            CAUGHT
                .iter()
                .map(|signal| signal.as_raw())
                .filter(|&raw| !is_in(ignored, raw)),
        )?;
        // Any handler replaces an inherited SIG_IGN; this one only notes.
        signal_hook::flag::register(
            Signal::CHILD.as_raw(),
            std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
        )?;
        Ok(Signals {
            delivery: ManuallyDrop::new(delivery),
            caught: VecDeque::new(),
        })
    }

    /// Waits for the next caught signal. Cancel safe: nothing is awaited
    /// between draining the wake-up bytes and taking the signals they
    /// announce, and signals taken but not returned wait in `caught`.
    pub(crate) async fn recv(&mut self) -> Caught {
        loop {
            if let Some(caught) = self.caught.pop_front() {
                return caught;
            }
            let read = self.delivery.get_read();
            if read.readable().await.is_err() {
                // The runtime is shutting down: no signal comes any more.
                return std::future::pending().await;
            }
            // Drain the wake-up bytes; `WouldBlock` clears the readiness,
            // so the next `readable` waits for the next handler's byte.
            let mut bytes = [0u8; 64];
            while read.try_read(&mut bytes).is_ok_and(|n| n > 0) {}
            // A handler notes its signal before it writes its byte, so a
            // signal whose byte was drained is taken here; one noted later
            // comes with a byte of its own.
            self.caught.extend(
                self.delivery
                    .pending()
                    .filter_map(|origin| Caught::from_origin(&origin)),
            );
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
    use std::time::Duration;

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

    /// Signals that arrive before anyone waits, several per wake-up, all
    /// come out of `recv`, with their sender, without a thread of ours.
    #[test]
    fn caught_signals_wake_the_runtime_and_come_out_one_by_one() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut signals = Signals::install().unwrap();
            let me = getpid();
            // Ignored by default: should the handler be missing, the test
            // process goes on and the timeout below reports it.
            kill_process(me, Signal::URG).unwrap();
            kill_process(me, Signal::WINCH).unwrap();
            let mut got = Vec::new();
            for _ in 0..2 {
                let caught = tokio::time::timeout(Duration::from_secs(10), signals.recv())
                    .await
                    .expect("a raised signal came out of recv");
                assert_eq!(caught.sender, Some(me.as_raw_nonzero().get()));
                assert!(!caught.by_kernel);
                got.push(caught.signal);
            }
            got.sort_by_key(|signal| signal.as_raw());
            let mut expected = vec![Signal::URG, Signal::WINCH];
            expected.sort_by_key(|signal| signal.as_raw());
            assert_eq!(got, expected);
            // Nothing else is pending: the next wait times out.
            let more = tokio::time::timeout(Duration::from_millis(50), signals.recv()).await;
            assert!(more.is_err(), "{more:?}");
        });
    }
}

#[cfg(test)]
mod ignored_tests {
    use super::*;

    #[test]
    fn the_ignored_mask_is_read_after_the_name_whatever_the_name_holds() {
        // A name with spaces and parentheses; fields 3 to 32 as zeros, then
        // sigignore (33) = SIGHUP | SIGINT, sigcatch (34), and the rest.
        let fields = vec!["0"; 30].join(" ");
        let stat = format!("4242 (a) b (c) {fields} 3 16384 0 0 0");
        assert_eq!(sigignore_of(&stat), Some(3));
        assert!(is_in(3, Signal::HUP.as_raw()) && is_in(3, Signal::INT.as_raw()));
        assert!(!is_in(3, Signal::TERM.as_raw()));
        assert!(!is_in(u64::MAX, 0) && !is_in(u64::MAX, 65));
        assert_eq!(sigignore_of("4242 (cut short"), None);
    }
}
