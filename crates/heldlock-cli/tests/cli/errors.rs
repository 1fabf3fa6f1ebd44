//! Clear one-line errors, never a panic: bad arguments (exit 64), and lock
//! paths that are no lock file (a symbolic link, a directory, a parent that
//! cannot be made).

use std::fs::{self, File};
use std::path::Path;
use std::process::Output;
use std::time::{Duration, SystemTime};

use crate::common::*;
use crate::fixtures::{lock_in, mtime};

fn assert_no_panic(output: &Output) {
    assert!(
        !stderr(output).contains("panicked"),
        "heldlock panicked: {}",
        stderr(output)
    );
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
