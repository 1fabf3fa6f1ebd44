//! `heldlock status`: free or held, stale or not, and which format the lock
//! file is in, as text and as JSON.

use std::fs;
use std::time::Duration;

use crate::common::*;
use crate::fixtures::{Holder, lock_in, seed_reference_lock};

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
