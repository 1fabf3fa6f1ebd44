//! `heldlock break`: only a stale lock without `--force`, and never a trace
//! left behind.

use std::fs;
use std::time::Duration;

use crate::common::*;
use crate::fixtures::{entries, lock_in, mtime, seed_reference_lock};

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
