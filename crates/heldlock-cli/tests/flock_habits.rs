//! flock(1)'s habits, the lock's directory, exit codes and `--json`, each
//! through the built `heldlock` binary. Every wait is a poll with a
//! deadline, except where how long heldlock waits is what is under test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use rustix::process::{Pid, Signal, kill_process};
use serde_json::Value;

/// A background `heldlock run <lock> -- sleep 30`, ended (SIGTERM,
/// forwarded; the lock released) when dropped.
struct Holder {
    child: Child,
}

impl Holder {
    fn start(lock: &Path) -> Holder {
        Holder::start_with(lock, &["sleep", "30"])
    }

    fn start_with(lock: &Path, command: &[&str]) -> Holder {
        let child = heldlock()
            .arg("run")
            .arg(lock)
            .arg("--")
            .args(command)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for("the holder to write the lock file", || {
            fs::read_to_string(lock).is_ok_and(|content| content.ends_with('\n'))
        });
        Holder { child }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap()).unwrap();
            let _ = kill_process(pid, Signal::TERM);
            let _ = self.child.wait();
        }
    }
}

fn lock_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("test.lock")
}

fn seed_reference_lock(lock: &Path, age: Duration) {
    let content = "4194000 0b6c6a8e-6a8f-4d0e-9f1e-2a7d3c1b5e4f 2020-01-01T00:00:00.000Z\n";
    fs::write(lock, content).unwrap();
    let file = File::options().write(true).open(lock).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
}

/// Whether `text` has a duration printed with more than one decimal or in
/// Rust's debug form (`201.513637ms`, `3.2s`).
fn has_raw_duration(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.windows(3).enumerate().any(|(at, window)| {
        // a digit, a dot, two more digits: more than one decimal
        window[0] == b'.'
            && window[1].is_ascii_digit()
            && window[2].is_ascii_digit()
            && at > 0
            && bytes[at - 1].is_ascii_digit()
    }) || ["ms", "s "].iter().any(|unit| {
        text.match_indices(unit)
            .any(|(at, _)| at > 0 && bytes[at - 1].is_ascii_digit())
    })
}

#[test]
fn short_no_wait_and_conflict_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let lock = lock_in(&dir);
    let _holder = Holder::start(&lock);
    let lock = lock.to_str().unwrap();
    for (args, code) in [
        (&["run", "-n", lock, "--", "echo", "ran"][..], 75),
        (&["run", "-n", "-E", "3", lock, "--", "echo", "ran"], 3),
        (
            &[
                "run",
                "--nonblock",
                "--conflict-exit-code",
                "9",
                lock,
                "--",
                "echo",
                "ran",
            ],
            9,
        ),
        // -w 0 is -n, as with flock.
        (&["run", "-w", "0", "-E", "4", lock, "--", "echo", "ran"], 4),
        (&["run", "-x", "-n", lock, "--", "echo", "ran"], 75),
    ] {
        let started = Instant::now();
        let output = run(args);
        assert_eq!(
            output.status.code(),
            Some(code),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{args:?} waited"
        );
        assert!(stdout(&output).is_empty(), "{args:?}: the command ran");
        assert_eq!(stderr(&output).lines().count(), 1, "{}", stderr(&output));
    }
}

#[test]
fn wait_takes_bare_seconds_and_human_durations() {
    let dir = tempfile::tempdir().unwrap();
    let lock = lock_in(&dir);
    let _holder = Holder::start(&lock);
    let lock = lock.to_str().unwrap();
    for (wait, shown) in [("0.3", "300 ms"), ("300ms", "300 ms"), ("1", "1 s")] {
        let started = Instant::now();
        let output = run(&["run", "-w", wait, "-E", "5", lock, "--", "echo", "ran"]);
        let waited = started.elapsed();
        assert_eq!(
            output.status.code(),
            Some(5),
            "-w {wait}: {}",
            stderr(&output)
        );
        let least = if wait == "1" { 1000 } else { 300 };
        assert!(
            waited >= Duration::from_millis(least),
            "-w {wait}: {waited:?}"
        );
        assert!(waited < Duration::from_secs(8), "-w {wait}: {waited:?}");
        let message = stderr(&output);
        assert!(
            message.contains(&format!("gave up after waiting {shown}")),
            "{message}"
        );
        // `held by pid N on HOST, taken T ago, last heartbeat AGE ago (...)`:
        // AGE rounded.
        let age = message
            .rsplit_once("last heartbeat ")
            .and_then(|(_, rest)| rest.split_once(" ago ("))
            .map(|(age, _)| age);
        assert!(age.is_some_and(|age| !has_raw_duration(age)), "{message}");
    }
}

#[test]
fn without_wait_run_waits_until_the_lock_is_free() {
    let dir = tempfile::tempdir().unwrap();
    let lock = lock_in(&dir);
    let go = dir.path().join("go");
    let go_shown = go.to_str().unwrap().to_owned();
    let script = format!("while [ ! -e '{go_shown}' ]; do sleep 0.05; done");
    let holder = Holder::start_with(&lock, &["sh", "-c", &script]);
    let started = Instant::now();
    let mut waiter = heldlock()
        .arg("run")
        .arg(&lock)
        .args(["--", "echo", "ran"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Longer than the library's own default wait (5 s): no default applies.
    while started.elapsed() < Duration::from_secs(6) {
        assert!(waiter.try_wait().unwrap().is_none(), "the waiter gave up");
        std::thread::sleep(Duration::from_millis(100));
    }
    fs::write(&go, "").unwrap();
    let mut status = None;
    wait_for("the waiter to get the lock and run", || {
        status = waiter.try_wait().unwrap();
        status.is_some()
    });
    let output = waiter.wait_with_output().unwrap();
    assert_eq!(status.unwrap().code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "ran\n");
    drop(holder);
}

#[test]
fn dash_c_runs_a_shell_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let lock = lock_in(&dir);
    let lock = lock.to_str().unwrap();
    let output = run(&[
        "run",
        lock,
        "-c",
        r#"printf '%s' "$HELDLOCK_OWNER" | wc -c; echo "$0"; exit 4"#,
    ]);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    let out = stdout(&output);
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(lines, ["36", "sh"], "{out}");
    assert!(!Path::new(lock).exists(), "the lock was left behind");

    // -c and a command after -- together: bad input.
    let output = run(&["run", "-c", "echo one", lock, "--", "echo", "two"]);
    assert_eq!(output.status.code(), Some(64), "{}", stderr(&output));
    assert!(stdout(&output).is_empty());
    assert_eq!(stderr(&output).lines().count(), 1, "{}", stderr(&output));
}

#[test]
fn a_missing_directory_needs_mkdir() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("a/b/test.lock");
    let shown = lock.to_str().unwrap();
    let output = run(&["run", shown, "--", "echo", "ran"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.contains("--mkdir") && message.contains("does not exist"),
        "{message}"
    );
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(stdout(&output).is_empty(), "the command ran");
    assert!(!dir.path().join("a").exists(), "a directory was made");

    let output = run(&["run", "--mkdir", shown, "--", "echo", "ran"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "ran\n");
    assert!(dir.path().join("a/b").is_dir());
    assert!(!lock.exists(), "the lock was left behind");

    // A file where a directory should be: "not a directory", either way.
    let file = dir.path().join("file");
    fs::write(&file, "").unwrap();
    let lock = file.join("sub/test.lock");
    for mkdir in [&[][..], &["--mkdir"]] {
        let output = heldlock()
            .arg("run")
            .args(mkdir)
            .arg(&lock)
            .args(["--", "echo", "ran"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        let message = stderr(&output);
        assert!(message.contains("not a directory"), "{mkdir:?}: {message}");
        assert!(!message.contains("File exists"), "{mkdir:?}: {message}");
    }
}

#[test]
fn status_exit_codes_are_distinct() {
    let dir = tempfile::tempdir().unwrap();
    let lock = lock_in(&dir);
    let shown = lock.to_str().unwrap();
    assert_eq!(run(&["status", shown]).status.code(), Some(0), "free");
    seed_reference_lock(&lock, Duration::from_millis(3_250));
    let held = run(&["status", shown]);
    assert_eq!(held.status.code(), Some(1), "held");
    // Durations print rounded.
    let text = stdout(&held);
    let age = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("age:"));
    assert!(
        age.is_some_and(|age| !has_raw_duration(age) && age.contains(" s since its last refresh")),
        "{text}"
    );
    fs::remove_file(&lock).unwrap();
    fs::create_dir(&lock).unwrap();
    let error = run(&["status", shown]);
    assert_eq!(error.status.code(), Some(2), "error: {}", stderr(&error));
    assert_eq!(run(&["status", ""]).status.code(), Some(64), "bad input");
}

/// The one JSON object on `output`'s stdout, and its keys.
fn one_object(output: &Output) -> (Value, BTreeSet<String>) {
    let values: Vec<Value> = serde_json::Deserializer::from_slice(&output.stdout)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(values.len(), 1, "{}", stdout(output));
    let value = values.into_iter().next().unwrap();
    assert_eq!(value["schema"], 1, "{value}");
    let keys = value.as_object().unwrap().keys().cloned().collect();
    (value, keys)
}

#[test]
fn json_is_one_object_with_the_same_keys_in_every_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let lock = lock_in(&dir);
    let shown = lock.to_str().unwrap();
    let not_a_dir = dir.path().join("not-a-lock");
    fs::create_dir(&not_a_dir).unwrap();
    let not_a_dir = not_a_dir.to_str().unwrap();

    let mut status_keys = BTreeSet::new();
    let free = run(&["status", "--json", shown]);
    let (value, keys) = one_object(&free);
    assert_eq!(
        (value["state"].as_str(), free.status.code()),
        (Some("free"), Some(0))
    );
    assert!(
        value["pid"].is_null() && value["error"].is_null(),
        "{value}"
    );
    status_keys.insert(keys);
    {
        let _holder = Holder::start(&lock);
        let held = run(&["status", "--json", shown]);
        let (value, keys) = one_object(&held);
        assert_eq!(
            (value["state"].as_str(), held.status.code()),
            (Some("held"), Some(1))
        );
        assert!(value["pid"].is_u64() && value["stale"] == false, "{value}");
        status_keys.insert(keys);
    }
    for (args, code) in [
        (vec!["status", "--json", not_a_dir], 2),
        (vec!["status", "--json", ""], 64),
        (vec!["status", "--json", "--stale", "soon", shown], 64),
    ] {
        let output = run(&args);
        let (value, keys) = one_object(&output);
        assert_eq!(output.status.code(), Some(code), "{args:?}");
        assert_eq!(value["state"], "error", "{args:?}: {value}");
        assert!(
            value["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{value}"
        );
        status_keys.insert(keys);
    }
    assert_eq!(status_keys.len(), 1, "status keys differ: {status_keys:?}");

    let mut break_keys = BTreeSet::new();
    seed_reference_lock(&lock, Duration::from_secs(1));
    for (args, result, code) in [
        (vec!["break", "--json", shown], "refused", 1),
        (vec!["break", "--json", "--force", shown], "broken", 0),
        (vec!["break", "--json", shown], "free", 0),
        (vec!["break", "--json", not_a_dir], "error", 2),
        (vec!["break", "--json", "--stale", "1", shown], "error", 64),
    ] {
        let output = run(&args);
        let (value, keys) = one_object(&output);
        assert_eq!(
            output.status.code(),
            Some(code),
            "{args:?}: {}",
            stderr(&output)
        );
        assert_eq!(value["result"], result, "{args:?}: {value}");
        if result == "refused" || result == "broken" {
            assert_eq!(value["pid"], 4_194_000, "{value}");
        }
        break_keys.insert(keys);
    }
    assert_eq!(break_keys.len(), 1, "break keys differ: {break_keys:?}");
}

#[test]
fn help_tells_flock_habits_defaults_and_exit_codes() {
    let top = stdout(&run(&["--help"]));
    let run_help = stdout(&run(&["run", "--help"]));
    let status_help = stdout(&run(&["status", "--help"]));
    let break_help = stdout(&run(&["break", "--help"]));
    for needle in [
        "-n, --no-wait",
        "-w, --wait",
        "-E, --conflict-exit-code",
        "-c, --command",
        "--mkdir",
        "waits until it gets the lock",
        "365 days",
        "defaults to 5 s",
        "[default: 75]",
    ] {
        assert!(
            run_help.contains(needle),
            "run --help lacks {needle:?}:\n{run_help}"
        );
    }
    assert!(status_help.contains("0 free; 1 held"), "{status_help}");
    assert!(status_help.contains("2 an error"), "{status_help}");
    assert!(break_help.contains("2 an error"), "{break_help}");
    assert!(top.contains("status: 0 free; 1 held; 2"), "{top}");
    // flock's kernel lock is dropped when its holder dies: on one host, it
    // survives a crashed holder too.
    assert!(
        !top.contains("Unlike flock(1), it survives a crashed holder"),
        "{top}"
    );
    assert!(
        top.contains("on one host, flock survives a crashed holder"),
        "{top}"
    );
}
