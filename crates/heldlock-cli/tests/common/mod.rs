//! What every test of the `heldlock` binary needs: starting it, reading its
//! output, and waiting for a condition or an exit with a deadline (never a
//! fixed sleep).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

/// How long any awaited condition may take on a loaded machine.
pub const DEADLINE: Duration = Duration::from_secs(15);
/// How often a condition is looked at again.
pub const POLL: Duration = Duration::from_millis(10);

/// The binary under test, with nothing on its standard input, and its log
/// lines at their default level whatever `RUST_LOG` the tests run with.
///
/// The signals the tests send it start at their default action, whatever
/// the test runner inherited: heldlock, as flock(1), leaves alone a signal
/// its caller ignores, and a runner started as a background job of a shell
/// without job control ignores SIGINT and SIGQUIT (under `nohup`, SIGHUP).
pub fn heldlock() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_heldlock"));
    command.stdin(Stdio::null()).env_remove("RUST_LOG");
    reset_signals(&mut command);
    command
}

/// The signals the tests send to heldlock or its command.
const SENT: [libc::c_int; 12] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
    libc::SIGALRM,
    libc::SIGTSTP,
    libc::SIGTTIN,
    libc::SIGTTOU,
    libc::SIGCONT,
];

#[allow(unsafe_code)]
fn reset_signals(command: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: an all-zero `sigaction` is a valid value of that plain C
    // struct (no handler pointer is read from it: `SIG_DFL` is 0, and the
    // mask is emptied below).
    let mut default: libc::sigaction = unsafe { std::mem::zeroed() };
    default.sa_sigaction = libc::SIG_DFL;
    // SAFETY: `default.sa_mask` is a valid, writable `sigset_t`.
    unsafe { libc::sigemptyset(&mut default.sa_mask) };
    // SAFETY: the closure runs in the child between `fork` and `exec`,
    // where only async-signal-safe calls are allowed: it calls
    // `sigaction` alone (on POSIX's list), with a pointer to a value it
    // owns, and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            for signal in SENT {
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
            Ok(())
        });
    }
}

/// Runs `heldlock args...` to its end, capturing its output.
pub fn run(args: &[&str]) -> Output {
    heldlock().args(args).output().unwrap()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Polls `condition` until it holds; panics naming `what` after [`DEADLINE`].
pub fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(POLL);
    }
}

/// Waits for `child` to exit, with a deadline.
pub fn wait_exit(child: &mut Child) -> ExitStatus {
    let mut status = None;
    wait_for("the process to exit", || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status.unwrap()
}

/// Sends `signal` to `child`.
pub fn signal(child: &Child, signal: Signal) {
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    kill_process(pid, signal).unwrap();
}
