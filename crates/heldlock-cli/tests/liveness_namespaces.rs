//! The `heldlock` binary against a holder in other namespaces: a contender
//! in another time or pid namespace never takes a held lock by judging its
//! holder dead by pid, and a dead holder's lock is still taken at once by a
//! contender of its own namespaces.
//!
//! Creating a namespace needs privileges: when it fails, a test prints
//! `SKIPPED <test>: <reason>` to stderr and passes, unless
//! `HELDLOCK_REQUIRE_NAMESPACES=1` makes it fail.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long any awaited condition may take on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(15);
/// `EX_TEMPFAIL`: the lock could not be had.
const BUSY: i32 = 75;

const SHIFTED_TIME: &[&str] = &["--time", "--boottime", "100000"];
const OWN_PIDS: &[&str] = &["--pid", "--fork", "--mount-proc", "--kill-child"];

/// Whether `unshare <args>` can run a process here; otherwise says why the
/// test is skipped (or fails it, when namespaces are required).
fn namespaces_available(test: &str, args: &[&str]) -> bool {
    let reason = match Command::new("unshare")
        .args(args)
        .args(["--", "true"])
        .stdin(Stdio::null())
        .output()
    {
        Ok(output) if output.status.success() => return true,
        Ok(output) => format!(
            "`unshare {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(e) => format!("cannot run `unshare`: {e}"),
    };
    assert!(
        std::env::var("HELDLOCK_REQUIRE_NAMESPACES").as_deref() != Ok("1"),
        "{test}: namespaces are required (HELDLOCK_REQUIRE_NAMESPACES=1), but {reason}"
    );
    // Past the test harness's capture of `eprintln!`, which would hide the
    // line of a passing test.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
    false
}

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(POLL);
    }
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    let mut status = None;
    wait_for("the process to exit", || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status.unwrap()
}

/// `heldlock run --no-wait <lock> -- true` under `unshare <unshare>` (directly
/// when empty): its exit code and standard error.
fn contend(unshare: &[&str], lock: &Path) -> (Option<i32>, String) {
    let heldlock = env!("CARGO_BIN_EXE_heldlock");
    let mut command = if unshare.is_empty() {
        Command::new(heldlock)
    } else {
        let mut command = Command::new("unshare");
        command.args(unshare).arg("--").arg(heldlock);
        command
    };
    let output = command
        .args(["run", "--no-wait"])
        .arg(lock)
        .args(["--", "true"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `heldlock run --stale 30s <lock> -- sleep 30`, its command's pid written
/// to `<dir>/command.pid`: killed with SIGKILL, the holder cannot release,
/// and the command is ended by that pid.
struct Holder {
    heldlock: Child,
    command_pid: i32,
}

impl Holder {
    fn start(dir: &Path, lock: &Path) -> Holder {
        let pid_file = dir.join("command.pid");
        let heldlock = Command::new(env!("CARGO_BIN_EXE_heldlock"))
            .args(["run", "--stale", "30s"])
            .arg(lock)
            .args(["--", "sh", "-c", "echo $$ > \"$0\"; exec sleep 30"])
            .arg(&pid_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut command_pid = None;
        wait_for("the holder's command to start", || {
            command_pid = fs::read_to_string(&pid_file)
                .ok()
                .and_then(|text| text.trim().parse().ok());
            command_pid.is_some()
        });
        assert!(fs::read_to_string(lock).unwrap().ends_with('\n'));
        Holder {
            heldlock,
            command_pid: command_pid.unwrap(),
        }
    }

    /// SIGKILLs the holder (its lock stays, fresh) and its command, which
    /// might otherwise keep a kernel lock on it through an inherited
    /// descriptor, and waits until neither runs.
    fn crash(&mut self) {
        self.heldlock.kill().unwrap();
        wait_exit(&mut self.heldlock);
        kill(self.command_pid);
        // Not our child: reaped by whoever adopted it, or left a zombie,
        // which holds no descriptor.
        let stat = format!("/proc/{}/stat", self.command_pid);
        wait_for("the holder's command to end", || {
            fs::read_to_string(&stat).map_or(true, |stat| {
                stat.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
            })
        });
    }
}

fn kill(pid: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.heldlock.kill();
        let _ = self.heldlock.wait();
        kill(self.command_pid);
    }
}

#[test]
fn contenders_in_other_namespaces_never_take_a_held_lock_by_pid() {
    let test = "contenders_in_other_namespaces_never_take_a_held_lock_by_pid";
    if !namespaces_available(test, SHIFTED_TIME) || !namespaces_available(test, OWN_PIDS) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("l.lock");
    let mut holder = Holder::start(dir.path(), &lock);
    let held = fs::read_to_string(&lock).unwrap();
    assert!(held.contains(" timens="), "{held:?}");

    // A live holder: busy, from everywhere.
    for (namespace, unshare) in [("own", &[][..]), ("time", SHIFTED_TIME), ("pid", OWN_PIDS)] {
        let (code, stderr) = contend(unshare, &lock);
        assert_eq!(code, Some(BUSY), "{namespace} namespace: {stderr}");
        assert_eq!(fs::read_to_string(&lock).unwrap(), held, "{namespace}");
    }

    // A dead holder whose lock is fresh: only a contender that can judge it
    // by pid takes it; the others wait for the heartbeat to age.
    holder.crash();
    for (namespace, unshare) in [("time", SHIFTED_TIME), ("pid", OWN_PIDS)] {
        let (code, stderr) = contend(unshare, &lock);
        assert_eq!(code, Some(BUSY), "{namespace} namespace: {stderr}");
        assert_eq!(fs::read_to_string(&lock).unwrap(), held, "{namespace}");
    }
    let (code, stderr) = contend(&[], &lock);
    assert_eq!(code, Some(0), "its own namespaces: {stderr}");
    assert!(!lock.exists(), "released after the command");
    drop(holder);
    // Only the holder's pid file is left, in the temporary directory.
    let left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(left, ["command.pid"]);
}
