//! `heldlock run`: mutual exclusion, waiting and its limits, what the command
//! sees and returns, and signals to the wrapper.

use std::fs;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::common::*;
use crate::fixtures::{Holder, entries, lock_in, seed_reference_lock};

#[test]
fn two_runs_on_one_lock_never_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let lock = lock_in(&dir);
    let log = dir.path().join("log");
    let runs: Vec<Child> = (0..4)
        .map(|_| {
            heldlock()
                .args(["run", "--wait", "30s"])
                .arg(&lock)
                .args(["--", "sh", "-c"])
                .arg(r#"echo start >> "$LOG"; sleep 0.2; echo end >> "$LOG""#)
                .env("LOG", &log)
                .spawn()
                .unwrap()
        })
        .collect();
    for mut run in runs {
        assert!(wait_exit(&mut run).success());
    }
    let log = fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let expected: Vec<&str> = ["start", "end"].repeat(4);
    assert_eq!(lines, expected, "critical sections overlapped");
    assert!(!lock.exists(), "the lock was left behind");
}

#[test]
fn a_stale_lock_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let lock = lock_in(&dir);
    let old = seed_reference_lock(&lock, Duration::from_secs(60));
    let output = heldlock()
        .args(["run", "--wait", "5s"])
        .arg(&lock)
        .args(["--", "sh", "-c", r#"cat "$HELDLOCK_PATH""#])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let ours = stdout(&output);
    assert_ne!(ours, old, "the stale lock was not replaced");
    assert_eq!(ours.split(' ').nth(1).map(str::len), Some(36), "{ours}");
    assert!(!lock.exists());
    assert_eq!(
        entries(dir.path()),
        Vec::<String>::new(),
        "trash left behind"
    );
}

#[test]
fn no_wait_on_a_held_lock_exits_75_at_once_naming_the_pid() {
    let dir = tempfile::tempdir().unwrap();
    let lock = lock_in(&dir);
    let holder = Holder::start(&lock);
    let start = Instant::now();
    let output = heldlock()
        .args(["run", "--no-wait"])
        .arg(&lock)
        .args(["--", "sh", "-c", "echo ran"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(75), "{}", stderr(&output));
    assert!(start.elapsed() < Duration::from_secs(3), "it waited");
    assert!(!stdout(&output).contains("ran"), "the command ran");
    let message = stderr(&output);
    assert!(
        message.contains(&format!("pid {}", holder.pid())),
        "{message}"
    );
    assert_eq!(message.lines().count(), 1, "{message}");
    drop(holder);
    assert!(!lock.exists(), "the holder did not release on SIGTERM");
}

#[test]
fn a_busy_lock_times_out_after_wait_with_75() {
    let dir = tempfile::tempdir().unwrap();
    let lock = lock_in(&dir);
    let _holder = Holder::start(&lock);
    let start = Instant::now();
    let output = heldlock()
        .args(["run", "--wait", "300ms"])
        .arg(&lock)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(75), "{}", stderr(&output));
    assert!(start.elapsed() >= Duration::from_millis(300));
    // Its holder runs on this host and holds the file's kernel lock.
    assert!(
        stderr(&output).contains("live process on this host"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn best_effort_runs_unlocked_and_exits_with_the_command_status() {
    let dir = tempfile::tempdir().unwrap();
    let lock = lock_in(&dir);
    let holder = Holder::start(&lock);
    let held_by = fs::read_to_string(&lock).unwrap();
    let output = heldlock()
        .args(["run", "--no-wait", "--best-effort"])
        .arg(&lock)
        .args(["--", "sh", "-c", r#"echo "owner=$HELDLOCK_OWNER"; exit 5"#])
        // An outer run's owner must not leak into an unlocked run.
        .env("HELDLOCK_OWNER", "outer")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
    assert_eq!(stdout(&output), "owner=\n");
    assert!(stderr(&output).contains("warning"), "{}", stderr(&output));
    assert_eq!(
        fs::read_to_string(&lock).unwrap(),
        held_by,
        "the holder's lock was touched"
    );
    drop(holder);
}

#[test]
fn the_command_exit_status_is_propagated() {
    let dir = tempfile::tempdir().unwrap();
    let lock = lock_in(&dir);
    let output = run(&["run", lock.to_str().unwrap(), "--", "sh", "-c", "exit 7"]);
    assert_eq!(output.status.code(), Some(7));
    let output = run(&[
        "run",
        lock.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "kill -TERM $$",
    ]);
    assert_eq!(output.status.code(), Some(128 + 15), "killed by SIGTERM");
    let output = run(&["run", lock.to_str().unwrap(), "--", "/nonexistent/command"]);
    assert_eq!(output.status.code(), Some(127), "{}", stderr(&output));
    // A file that is there but cannot be executed: 126, as `env` says.
    let not_executable = dir.path().join("not-executable");
    fs::write(&not_executable, "#!/bin/sh\n").unwrap();
    let output = heldlock()
        .arg("run")
        .arg(&lock)
        .arg("--")
        .arg(&not_executable)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(126), "{}", stderr(&output));
    assert!(!lock.exists(), "the lock was left behind");
}

#[test]
fn the_command_sees_the_lock_path_and_owner() {
    let dir = tempfile::tempdir().unwrap();
    let lock = lock_in(&dir);
    let output = heldlock()
        .arg("run")
        .arg(&lock)
        .args([
            "--",
            "sh",
            "-c",
            r#"printf '%s\n%s\n%s\n' "$HELDLOCK_PATH" "$HELDLOCK_OWNER" "$PPID"; cat "$HELDLOCK_PATH""#,
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let out = stdout(&output);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert_eq!(Path::new(lines[0]), lock);
    let fields: Vec<&str> = lines[3].split(' ').collect();
    assert_eq!(
        fields[0], lines[2],
        "the lock's pid is not heldlock's (the parent)"
    );
    assert_eq!(
        lines[1], fields[1],
        "HELDLOCK_OWNER is not the owner in the lock file"
    );
    assert_eq!(lines[1].len(), 36);
}

/// `heldlock run lock -- sh -c script`, the script's files in `dir` named
/// by `READY`, `OUT` and `GO`; returns once the script created `READY`
/// (its traps are set).
fn run_trapping(dir: &tempfile::TempDir, lock: &Path, script: &str) -> Child {
    let ready = dir.path().join("ready");
    let child = heldlock()
        .arg("run")
        .arg(lock)
        .args(["--", "sh", "-c", script])
        .env("READY", &ready)
        .env("OUT", dir.path().join("out"))
        .env("GO", dir.path().join("go"))
        // An orphaned `sleep` keeps inherited pipes open: use none.
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the command to set its trap", || ready.exists());
    child
}

#[test]
fn sigterm_is_forwarded_and_the_lock_released() {
    let dir = tempfile::tempdir().unwrap();
    let lock = lock_in(&dir);
    let out = dir.path().join("out");
    let mut child = run_trapping(
        &dir,
        &lock,
        r#"trap "echo got-term > $OUT; exit 3" TERM; touch "$READY"; sleep 10 & wait"#,
    );
    assert!(lock.exists());
    signal(&child, Signal::TERM);
    let status = wait_exit(&mut child);
    assert_eq!(status.code(), Some(3), "the command's trap did not run");
    assert_eq!(fs::read_to_string(&out).unwrap(), "got-term\n");
    assert!(!lock.exists(), "the lock was not released");
    let again = run(&["run", "--no-wait", lock.to_str().unwrap(), "--", "true"]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
}

#[test]
fn a_command_that_outlives_sigterm_keeps_the_lock_until_it_exits() {
    let dir = tempfile::tempdir().unwrap();
    let lock = lock_in(&dir);
    let (go, out) = (dir.path().join("go"), dir.path().join("out"));
    // The command's own loop, not the test's synchronisation: it runs
    // until the test lets it end.
    let mut child = run_trapping(
        &dir,
        &lock,
        r#"trap 'echo got-term >> "$OUT"' TERM; touch "$READY"; while [ ! -e "$GO" ]; do sleep 0.02; done; exit 4"#,
    );
    signal(&child, Signal::TERM);
    // Relayed, and handled without exiting: the command runs on, and so
    // the lock stays held.
    wait_for("the command to get SIGTERM", || out.exists());
    assert!(lock.exists(), "the lock went while the command runs");
    let busy = run(&["run", "--no-wait", lock.to_str().unwrap(), "--", "true"]);
    assert_eq!(busy.status.code(), Some(75), "{}", stderr(&busy));
    assert!(child.try_wait().unwrap().is_none(), "heldlock exited first");
    fs::write(&go, "").unwrap();
    assert_eq!(
        wait_exit(&mut child).code(),
        Some(4),
        "not the command's status"
    );
    assert!(!lock.exists(), "the lock was not released");
}

/// Whether process `pid` catches `signal` (Linux: `SigCgt` in /proc).
fn catches(pid: u32, signal: u32) -> bool {
    let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (signal - 1)) != 0)
}

#[test]
fn a_signal_while_waiting_ends_the_wait() {
    if !Path::new("/proc/self/status").exists() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lock = lock_in(&dir);
    let holder = Holder::start(&lock);
    let mut waiter = heldlock()
        .args(["run", "--wait", "60s"])
        .arg(&lock)
        .args(["--", "echo", "ran"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = waiter.id();
    wait_for("the waiter to catch SIGINT", || catches(pid, 2));
    signal(&waiter, Signal::INT);
    let status = wait_exit(&mut waiter);
    assert_eq!(status.code(), Some(128 + 2));
    let output = waiter.wait_with_output().unwrap();
    assert!(stdout(&output).is_empty(), "the command ran");
    assert!(lock.exists(), "the holder's lock is gone");
    drop(holder);
}

#[test]
fn the_demo_runs_with_a_relative_path() {
    let dir = tempfile::tempdir().unwrap();
    let output = heldlock()
        .current_dir(dir.path())
        .args([
            "run",
            "demo.lock",
            "--",
            "sh",
            "-c",
            "echo hello from the critical section",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "hello from the critical section\n");
    assert!(!dir.path().join("demo.lock").exists());
}
