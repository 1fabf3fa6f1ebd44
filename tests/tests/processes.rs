//! Real processes contending on one lock file.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::*;

const WORKER: &str = env!("CARGO_BIN_EXE_heldlock-test-worker");

fn worker(args: &[&str]) -> Child {
    Command::new(WORKER).args(args).spawn().unwrap()
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Polls `done` every 10 ms for up to `limit`; real processes give no other signal.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    done()
}

#[test]
fn eight_processes_increment_a_counter_exactly() {
    let (dir, lock) = lock_path();
    let counter = dir.path().join("counter");
    let workers: Vec<Child> = (0..8)
        .map(|_| worker(&["increment", s(&lock), s(&counter), "200", "5000"]))
        .collect();
    for mut w in workers {
        assert!(w.wait().unwrap().success());
    }
    let total: u64 = std::fs::read_to_string(&counter)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(total, 8 * 200, "no increment lost or doubled");
    assert!(!lock.exists());
    assert!(trash_in(dir.path()).is_empty());
}

#[test]
fn a_killed_holder_is_taken_over_within_stale_plus_poll() {
    let (dir, lock) = lock_path();
    let ready = dir.path().join("ready");
    let stale_ms = 1000;
    let mut holder = worker(&["hold", s(&lock), s(&ready), "1000"]);
    assert!(
        wait_until(Duration::from_secs(30), || ready.exists()),
        "the holder never acquired"
    );
    let outs = [dir.path().join("w1"), dir.path().join("w2")];
    let mut waiters: Vec<Child> = outs
        .iter()
        .map(|o| worker(&["acquire", s(&lock), s(o), "1000"]))
        .collect();
    // Gated on both waiters waiting on the live lock, not on a guessed
    // sleep.
    for waiter in &waiters {
        support::wait_until_waiting(waiter.id());
    }
    assert!(
        outs.iter().all(|o| !o.exists()),
        "nobody may take a live holder's lock"
    );

    holder.kill().unwrap();
    holder.wait().unwrap();
    let killed_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    for w in &mut waiters {
        assert!(w.wait().unwrap().success());
    }
    let first: u128 = outs
        .iter()
        .map(|o| {
            std::fs::read_to_string(o)
                .unwrap()
                .trim()
                .parse::<u128>()
                .unwrap()
        })
        .min()
        .unwrap();
    let takeover = first.saturating_sub(killed_at);
    // stale + poll, plus a generous allowance for process scheduling on a busy machine.
    assert!(
        takeover <= stale_ms + 5 + 1000,
        "takeover took {takeover} ms"
    );
    assert!(!lock.exists());
    assert!(
        trash_in(dir.path()).is_empty(),
        "the broken lock's trash was cleaned"
    );
}
