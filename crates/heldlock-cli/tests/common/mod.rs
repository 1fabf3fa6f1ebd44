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
pub fn heldlock() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_heldlock"));
    command.stdin(Stdio::null()).env_remove("RUST_LOG");
    command
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
