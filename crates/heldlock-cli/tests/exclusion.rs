//! The exclusion holes an outside review found, each reproduced through the
//! `heldlock` binary as the review did: a user's file at the lock path, a
//! wrapper killed while its command runs, a contender with a shorter stale
//! age. Every wait is a poll with a deadline, never a fixed sleep, except
//! where a lock's age is what is under test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

use std::fs::{self, File};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime};

use rustix::process::{Pid, Signal, kill_process};

/// The CLI's exit code for a busy lock.
const BUSY: i32 = 75;

fn kill(pid: u32, signal: Signal) {
    let pid = Pid::from_raw(i32::try_from(pid).unwrap()).unwrap();
    let _ = kill_process(pid, signal);
}

fn age(path: &Path, by: Duration) {
    let file = File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - by).unwrap();
}

/// The review's repro: `printf 'data\n' > data.txt; touch -d '-1 hour'
/// data.txt; heldlock run --stale 1s data.txt -- true` deleted data.txt.
#[test]
fn a_data_file_at_the_lock_path_is_refused_at_once_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.txt");
    fs::write(&data, b"data\n").unwrap();
    age(&data, Duration::from_secs(3600));
    let shown = data.to_str().unwrap();
    let started = Instant::now();
    let out = run(&["run", "--stale", "1s", "--wait", "30s", shown, "--", "true"]);
    // At once: waiting cannot turn a data file into a lock.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(
        message.contains("not a lock file")
            && message.contains("5 bytes")
            && message.contains("data\\n"),
        "{message}"
    );
    assert_eq!(fs::read(&data).unwrap(), b"data\n");
    let out = run(&["break", "--stale", "1s", shown]);
    assert_ne!(out.status.code(), Some(0), "break refuses a non-lock");
    assert_eq!(fs::read(&data).unwrap(), b"data\n");
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "nothing beside it"
    );
    // A person who names it and insists may remove it.
    let out = run(&["break", "--force", shown]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!data.exists());
}

/// The `flock -en "$0"` idiom: a script that locks its own path.
#[test]
fn a_script_that_locks_its_own_path_is_never_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("job.sh");
    let body = b"#!/bin/sh\nheldlock run -n \"$0\" -- make\n";
    fs::write(&script, body).unwrap();
    age(&script, Duration::from_secs(86_400));
    let out = run(&[
        "run",
        "--no-wait",
        "--stale",
        "1s",
        script.to_str().unwrap(),
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(fs::read(&script).unwrap(), body);
}

/// `heldlock run --stale <stale> <lock> -- sh -c '...; exec sleep 60'` in
/// `dir`: the wrapper, and the pid of its command once it runs.
fn run_sleeping_command(dir: &Path, lock: &str, stale: &str) -> (Child, u32) {
    let pid_file = dir.join("command.pid");
    let script = format!("echo $$ > {}; exec sleep 60", pid_file.display());
    let wrapper = heldlock()
        .args(["run", "--stale", stale, lock, "--", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the command to start", || {
        fs::read_to_string(&pid_file).is_ok_and(|pid| pid.ends_with('\n'))
    });
    let command = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (wrapper, command)
}

/// The review's repro: `heldlock run --stale 2s l.lock -- sleep 30 & kill
/// -9 $!`, then `heldlock run -n l.lock -- true` got the lock while `sleep`
/// still ran. The command inherits the lock file's kernel lock, which a
/// contender on this host takes as proof of life before pids and ages.
#[test]
fn a_killed_wrapper_leaves_the_lock_held_while_its_command_runs() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("l.lock");
    let shown = lock.to_str().unwrap();
    let (mut wrapper, command) = run_sleeping_command(dir.path(), shown, "1s");
    kill(wrapper.id(), Signal::KILL);
    wrapper.wait().unwrap();

    // The holder's pid is dead: still busy.
    let out = run(&["run", "--no-wait", "--stale", "1s", shown, "--", "true"]);
    assert_eq!(out.status.code(), Some(BUSY), "{}", stderr(&out));
    // Real time is what is tested: the heartbeat stopped with the wrapper,
    // and after twice the stale age the lock is old by every clock.
    std::thread::sleep(Duration::from_secs(2));
    let out = run(&["run", "--no-wait", "--stale", "1s", shown, "--", "true"]);
    assert_eq!(out.status.code(), Some(BUSY), "{}", stderr(&out));
    let out = run(&["status", shown]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("live process"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // A waiter takes over soon after the last process of the command ends.
    let mut waiter = heldlock()
        .args(["run", "--stale", "1s", "--wait", "20s", shown, "--", "true"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Let it find the lock busy before the command ends.
    std::thread::sleep(Duration::from_millis(300));
    let ended = Instant::now();
    kill(command, Signal::KILL);
    let status = waiter.wait().unwrap();
    let took = ended.elapsed();
    assert!(status.success(), "the waiter gets the lock");
    eprintln!("takeover after the command's end: {took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(!lock.exists(), "released by the waiter");
}

/// The review's repro: a holder with `--stale 20s` refreshes every ~6.7 s;
/// a waiter with `--stale 1s` broke its lock after 1 s. On one host the
/// kernel lock protects it as well; the record's declared stale age is what
/// protects it from hosts that cannot see that (see the library's tests).
#[test]
fn a_shorter_stale_never_breaks_a_live_holder() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("l.lock");
    let shown = lock.to_str().unwrap();
    let holder = heldlock()
        .args(["run", "--stale", "20s", shown, "--", "sleep", "30"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the holder's record", || {
        fs::read_to_string(&lock).is_ok_and(|content| content.ends_with('\n'))
    });
    let record = fs::read_to_string(&lock).unwrap();
    assert!(record.contains(" stale_ms=20000"), "{record}");
    let out = run(&["run", "--stale", "1s", "--wait", "3s", shown, "--", "true"]);
    assert_eq!(out.status.code(), Some(BUSY), "{}", stderr(&out));
    assert_eq!(fs::read_to_string(&lock).unwrap(), record, "untouched");
    kill(holder.id(), Signal::TERM);
    let output = holder.wait_with_output().unwrap();
    assert!(
        !stderr(&output).contains("lost the lock"),
        "{}",
        stderr(&output)
    );
    holder_gone(&lock);
}

fn holder_gone(lock: &Path) {
    wait_for("the lock to be released", || !lock.exists());
}

/// `status` and `break` judge a holder as `run` does: one that ran on this
/// host and is gone (wrapper and command killed together, so no kernel lock
/// is left either) is stale at once, whatever its age and `--stale`.
#[test]
fn status_and_break_agree_with_run_about_a_dead_holder() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("l.lock");
    let shown = lock.to_str().unwrap();
    let (mut wrapper, command) = run_sleeping_command(dir.path(), shown, "1h");
    kill(command, Signal::KILL);
    kill(wrapper.id(), Signal::KILL);
    wrapper.wait().unwrap();
    // The command is reaped by init once the wrapper is gone.
    wait_for("the command to be gone", || {
        !Path::new(&format!("/proc/{command}")).exists()
    });

    let out = run(&["status", "--json", "--stale", "1h", shown]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["holder_dead"], true, "{json}");
    assert_eq!(json["stale"], true, "{json}");
    let out = run(&["break", "--stale", "1h", shown]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!lock.exists());
}
