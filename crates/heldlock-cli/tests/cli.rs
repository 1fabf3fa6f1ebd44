//! The `heldlock` binary driven as a user would: real processes, real lock
//! files, real signals. Every wait is a poll for a file or an exit status
//! with a deadline, never a fixed sleep.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use rustix::process::Signal;

/// A background `heldlock run <lock> -- sleep 30` holding the lock until
/// dropped (then SIGTERM, which heldlock forwards, and the lock is released).
struct Holder {
    child: Child,
}

impl Holder {
    fn start(lock: &Path) -> Holder {
        let child = heldlock()
            .arg("run")
            .arg(lock)
            .args(["--", "sleep", "30"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for("the holder to create the lock file", || {
            fs::read_to_string(lock).is_ok_and(|content| content.ends_with('\n'))
        });
        Holder { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            signal(&self.child, Signal::TERM);
            let _ = self.child.wait();
        }
    }
}

/// Writes a lock in the reference's format, `<pid> <uuid> <ISO time>\n`,
/// stamped `age` ago.
fn seed_reference_lock(lock: &Path, age: Duration) -> String {
    let content = "4194000 0b6c6a8e-6a8f-4d0e-9f1e-2a7d3c1b5e4f 2020-01-01T00:00:00.000Z\n";
    fs::write(lock, content).unwrap();
    let file = File::options().write(true).open(lock).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
    content.to_owned()
}

fn mtime(path: &Path) -> SystemTime {
    fs::symlink_metadata(path).unwrap().modified().unwrap()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn assert_no_panic(output: &Output) {
    assert!(
        !stderr(output).contains("panicked"),
        "heldlock panicked: {}",
        stderr(output)
    );
}

fn lock_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("test.lock")
}

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

#[test]
fn status_reports_free_and_held() {
    let dir = tempfile::tempdir().unwrap();
    let lock = lock_in(&dir);
    let free = run(&["status", lock.to_str().unwrap()]);
    assert_eq!(free.status.code(), Some(0));
    assert!(stdout(&free).contains("free"));
    let free = run(&["status", "--json", lock.to_str().unwrap()]);
    assert_eq!(free.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&free.stdout).unwrap();
    assert_eq!(json["state"], "free");

    let holder = Holder::start(&lock);
    let owner = fs::read_to_string(&lock)
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .to_owned();
    let held = run(&["status", lock.to_str().unwrap()]);
    assert_eq!(held.status.code(), Some(1));
    assert!(stdout(&held).contains(&owner), "{}", stdout(&held));
    let held = run(&["status", "--json", lock.to_str().unwrap()]);
    assert_eq!(held.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&held.stdout).unwrap();
    assert_eq!(json["state"], "held");
    assert_eq!(json["pid"], u64::from(holder.pid()));
    assert_eq!(json["owner"], owner.as_str());
    assert!(json["age_ms"].is_u64(), "{json}");
    assert_eq!(json["stale"], false);
    drop(holder);
}

#[test]
fn status_judges_staleness_and_format() {
    let dir = tempfile::tempdir().unwrap();
    let lock = lock_in(&dir);
    seed_reference_lock(&lock, Duration::from_secs(60));
    let output = run(&["status", "--json", "--stale", "30s", lock.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["stale"], true);
    assert_eq!(json["format"], "reference");
    assert_eq!(json["pid"], 4_194_000);
    assert!(json["age_ms"].as_u64().unwrap() >= 60_000);
    let output = run(&["status", "--json", "--stale", "2m", lock.to_str().unwrap()]);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["stale"], false);

    // A holder that crashed in the middle of its write left a prefix.
    fs::write(&lock, "4194000 0b6c6a8e-6a8f").unwrap();
    let output = run(&["status", "--json", lock.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["format"], "foreign");
    assert!(json["pid"].is_null());
    assert!(json["summary"].as_str().unwrap().contains("0b6c6a8e-6a8f"));

    // Anything else is not a lock at all, and said so: an error (2).
    fs::write(&lock, "not a lock record at all\n").unwrap();
    let output = run(&["status", "--json", lock.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("not a lock file"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn break_refuses_a_fresh_lock_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let lock = lock_in(&dir);
    let content = seed_reference_lock(&lock, Duration::from_secs(1));
    let before = mtime(&lock);
    let output = run(&["break", lock.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("--force"), "{}", stderr(&output));
    assert_eq!(fs::read_to_string(&lock).unwrap(), content);
    assert_eq!(mtime(&lock), before);

    let output = run(&["break", "--force", lock.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("pid 4194000"),
        "{}",
        stdout(&output)
    );
    assert!(!lock.exists());
    assert_eq!(
        entries(dir.path()),
        Vec::<String>::new(),
        "trash left behind"
    );
}

#[test]
fn break_removes_a_stale_lock_and_leaves_no_trash() {
    let dir = tempfile::tempdir().unwrap();
    let lock = lock_in(&dir);
    seed_reference_lock(&lock, Duration::from_secs(60));
    let output = run(&["break", "--stale", "30s", lock.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(!lock.exists());
    let names = entries(dir.path());
    assert!(
        !names.iter().any(|name| name.contains(".breaking.")),
        "{names:?}"
    );
    assert_eq!(names, Vec::<String>::new());

    let output = run(&["break", lock.to_str().unwrap()]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "an absent lock is already free"
    );
    assert!(stdout(&output).contains("already free"));
}

#[test]
fn bad_input_exits_64_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let lock = lock_in(&dir);
    let lock = lock.to_str().unwrap();
    let cases: &[&[&str]] = &[
        &["run", "--wait", "5x", lock, "--", "true"],
        &["run", "--wait", "-1", lock, "--", "true"],
        &["run", "-w", "400days", lock, "--", "true"],
        &["run", "--stale", "soon", lock, "--", "true"],
        &["run", "--poll", "0s", lock, "--", "true"],
        &["run", "-c", "true", lock, "--", "true"],
        &["run", "-c", "", lock],
        &["run", "-E", "256", lock, "--", "true"],
        &["run", lock],
        &["run", lock, "--"],
        &[
            "run",
            "--stale",
            "1s",
            "--heartbeat",
            "1s",
            lock,
            "--",
            "true",
        ],
        &[
            "run",
            "--stale",
            "1s",
            "--heartbeat",
            "5s",
            lock,
            "--",
            "true",
        ],
        &["run", "--wait", "1s", "--no-wait", lock, "--", "true"],
        &["run", "", "--", "true"],
        &["run", "--bogus", lock, "--", "true"],
        &["status", ""],
        &["status", "--stale", "x", lock],
        &["break", ""],
        &["break", "--stale", "1", lock],
        &["break", "--stale", "0s", lock],
        &["frobnicate"],
        &[],
    ];
    for args in cases {
        let output = run(args);
        assert_eq!(
            output.status.code(),
            Some(64),
            "{args:?}: {}",
            stderr(&output)
        );
        assert_no_panic(&output);
        assert!(!Path::new(lock).exists(), "{args:?} created the lock");
        if !args.is_empty() {
            let message = stderr(&output);
            assert_eq!(message.lines().count(), 1, "{args:?}: {message}");
            assert!(message.starts_with("heldlock: "), "{args:?}: {message}");
        }
    }
}

#[test]
fn a_symlink_at_the_lock_path_is_never_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let lock = lock_in(&dir);
    let victim = dir.path().join("victim");
    fs::write(&victim, "precious\n").unwrap();
    let old = SystemTime::now() - Duration::from_secs(3600);
    File::options()
        .write(true)
        .open(&victim)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let victim_mtime = mtime(&victim);
    std::os::unix::fs::symlink(&victim, &lock).unwrap();

    let output = heldlock()
        .args(["run", "--wait", "300ms"])
        .arg(&lock)
        .args(["--", "sh", "-c", "echo ran"])
        .output()
        .unwrap();
    assert_no_panic(&output);
    // Not a lock: refused at once, since waiting would not change that.
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("symbolic link"),
        "{}",
        stderr(&output)
    );
    assert!(!stdout(&output).contains("ran"));

    let output = heldlock()
        .args(["run", "--no-wait", "--best-effort"])
        .arg(&lock)
        .args(["--", "sh", "-c", "echo ran"])
        .output()
        .unwrap();
    assert_no_panic(&output);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "ran\n");

    let output = run(&["status", lock.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "not a lock: an error");
    assert_no_panic(&output);

    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(mtime(&victim), victim_mtime);
    assert!(
        fs::symlink_metadata(&lock)
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn a_directory_at_the_lock_path_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let lock = lock_in(&dir);
    fs::create_dir(&lock).unwrap();
    // `run` fails with 1; `status` and `break` report an error with 2.
    for (args, code) in [
        (vec!["run", lock.to_str().unwrap(), "--", "true"], 1),
        (vec!["status", lock.to_str().unwrap()], 2),
        (vec!["break", "--force", lock.to_str().unwrap()], 2),
    ] {
        let output = run(&args);
        assert_no_panic(&output);
        assert_eq!(
            output.status.code(),
            Some(code),
            "{args:?}: {}",
            stderr(&output)
        );
        let message = stderr(&output);
        assert!(message.contains("directory"), "{args:?}: {message}");
        assert_eq!(message.lines().count(), 1, "{args:?}: {message}");
    }
    let output = run(&[
        "run",
        "--best-effort",
        lock.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "exit 4",
    ]);
    assert_no_panic(&output);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(stderr(&output).contains("warning"));
    assert!(lock.is_dir());
}

#[test]
fn a_lock_directory_that_cannot_be_made_is_a_clear_error() {
    // Root ignores permission bits, so a regular file in the way stands in
    // for an unwritable directory: the parent directory cannot be created,
    // and the error says "not a directory", with or without --mkdir.
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    fs::write(&blocker, "").unwrap();
    let lock = blocker.join("test.lock");
    for mkdir in [&[][..], &["--mkdir"]] {
        let output = heldlock()
            .arg("run")
            .args(mkdir)
            .arg(&lock)
            .args(["--", "echo", "ran"])
            .output()
            .unwrap();
        assert_no_panic(&output);
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        assert_eq!(stderr(&output).lines().count(), 1, "{}", stderr(&output));
        assert!(
            stderr(&output).contains("not a directory") && !stderr(&output).contains("File exists"),
            "{mkdir:?}: {}",
            stderr(&output)
        );
        assert!(stdout(&output).is_empty());
    }
    let output = run(&[
        "run",
        "--best-effort",
        lock.to_str().unwrap(),
        "--",
        "echo",
        "ran",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "ran\n");
}

#[test]
fn sigterm_is_forwarded_and_the_lock_released() {
    let dir = tempfile::tempdir().unwrap();
    let lock = lock_in(&dir);
    let out = dir.path().join("out");
    let ready = dir.path().join("ready");
    let mut child = heldlock()
        .arg("run")
        .arg(&lock)
        .args([
            "--",
            "sh",
            "-c",
            r#"trap "echo got-term > $OUT; exit 3" TERM; touch "$READY"; sleep 10 & wait"#,
        ])
        .env("OUT", &out)
        .env("READY", &ready)
        // The orphaned `sleep` keeps inherited pipes open: use none.
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the command to set its trap", || ready.exists());
    assert!(lock.exists());
    signal(&child, Signal::TERM);
    let status = wait_exit(&mut child);
    assert_eq!(status.code(), Some(3), "the command's trap did not run");
    assert_eq!(fs::read_to_string(&out).unwrap(), "got-term\n");
    assert!(!lock.exists(), "the lock was not released");
    let again = run(&["run", "--no-wait", lock.to_str().unwrap(), "--", "true"]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
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
