//! The log lines on stderr: a stale break is reported by default, `-v`
//! shows the lock acquired and released, `RUST_LOG` overrides the flags,
//! and `--json` keeps stdout to one object whatever is logged.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The pid in the seeded lock: far above any pid the tests' machines use.
const DEAD_PID: &str = "4194000";

/// A lock in the reference's format (no host: judged by age alone),
/// last refreshed a minute ago: stale by the default 30 s.
fn stale_lock(dir: &tempfile::TempDir) -> PathBuf {
    let lock = dir.path().join("logs.lock");
    fs::write(
        &lock,
        format!("{DEAD_PID} 0b6c6a8e-6a8f-4d0e-9f1e-2a7d3c1b5e4f 2020-01-01T00:00:00.000Z\n"),
    )
    .unwrap();
    let file = File::options().write(true).open(&lock).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(60))
        .unwrap();
    lock
}

fn run_true(lock: &Path, flags: &[&str]) -> std::process::Output {
    heldlock()
        .arg("run")
        .args(flags)
        .args(["--wait", "5s"])
        .arg(lock)
        .args(["--", "true"])
        .output()
        .unwrap()
}

#[test]
fn a_stale_break_is_reported_on_stderr_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let lock = stale_lock(&dir);
    let output = run_true(&lock, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        message.starts_with("heldlock: warning: broke a stale lock "),
        "{message}"
    );
    for field in [
        &format!("holder.pid={DEAD_PID}"),
        "holder.owner=0b6c6a8e-6a8f-4d0e-9f1e-2a7d3c1b5e4f",
        "reason=old_stamp",
        "age=1min",
    ] {
        assert!(message.contains(field), "{field} missing: {message}");
    }
    assert!(stdout(&output).is_empty(), "{}", stdout(&output));
}

#[test]
fn a_quiet_run_logs_nothing_and_verbose_shows_acquired_and_released() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("free.lock");
    let quiet = run_true(&lock, &[]);
    assert_eq!(quiet.status.code(), Some(0), "{}", stderr(&quiet));
    assert_eq!(stderr(&quiet), "");

    let verbose = run_true(&lock, &["-v"]);
    assert_eq!(verbose.status.code(), Some(0), "{}", stderr(&verbose));
    let message = stderr(&verbose);
    assert!(
        message.contains("heldlock: info: acquired the lock; running the command"),
        "{message}"
    );
    assert!(
        message.contains("heldlock: info: the command exited code=0"),
        "{message}"
    );
    assert!(
        message.contains("heldlock: info: released the lock"),
        "{message}"
    );
    assert!(!message.contains("debug:"), "-v is info: {message}");

    // -vv adds the library's own events, in its spans.
    let debug = run_true(&lock, &["-vv"]);
    let message = stderr(&debug);
    assert!(
        message.contains("heldlock: debug: acquire{resource=") && message.contains("acquired"),
        "{message}"
    );
    assert!(message.contains("}: released held="), "{message}");
}

#[test]
fn rust_log_overrides_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    let lock = stale_lock(&dir);
    let silent = heldlock()
        .env("RUST_LOG", "off")
        .args(["-vv", "run", "--wait", "5s"])
        .arg(&lock)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(silent.status.code(), Some(0), "{}", stderr(&silent));
    assert_eq!(stderr(&silent), "", "RUST_LOG=off silences the logs");

    // A directive for one target raises it alone; the default warnings stay.
    let lock = stale_lock(&dir);
    let core_only = heldlock()
        .env("RUST_LOG", "heldlock_core=debug")
        .args(["run", "--wait", "5s"])
        .arg(&lock)
        .args(["--", "true"])
        .output()
        .unwrap();
    let message = stderr(&core_only);
    assert!(message.contains("broke a stale lock"), "{message}");
    assert!(message.contains("acquired waited="), "{message}");
    assert!(
        !message.contains("info:"),
        "the CLI's own stay at warn: {message}"
    );
    assert!(
        !message.contains("break marker"),
        "heldlock_fs stays at warn: {message}"
    );
}

#[test]
fn json_output_stays_one_object_on_stdout_with_logs_on() {
    let dir = tempfile::tempdir().unwrap();
    let lock = stale_lock(&dir);
    for command in ["status", "break"] {
        let output = heldlock()
            .args(["-vvv", command, "--json"])
            .arg(&lock)
            .output()
            .unwrap();
        let out = stdout(&output);
        assert_eq!(out.lines().count(), 1, "{command}: {out}");
        let object: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(object["command"], command, "{out}");
        assert!(
            !stderr(&output).contains("\"schema\""),
            "{}",
            stderr(&output)
        );
    }
    // The break's own steps were logged, on stderr.
    let lock = stale_lock(&dir);
    let output = heldlock()
        .args(["break", "--json", "-vv"])
        .arg(&lock)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let object: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(object["result"], "broken");
    assert!(
        stderr(&output).contains("heldlock: debug: took the break marker"),
        "{}",
        stderr(&output)
    );
}
