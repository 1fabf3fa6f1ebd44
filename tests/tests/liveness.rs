//! Fast hand-off and same-host crash recovery: waiters are woken by the
//! release itself and by a same-host holder's death, and a dead same-host
//! holder's lock is broken at once; records from elsewhere never are.
//!
//! Real processes and real time are what is tested here: the bounds are
//! generous (seconds) against expected milliseconds, and far below the
//! `stale` (30 s) and `poll` (10 s) that a slow path would have to wait out.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use heldlock_core::{Error, HostProbe, LockBackend, LockOptions, LockRecord};
use heldlock_fs::{FsBackend, LocalHost};
use heldlock_tokio::TokioRuntime;
use support::*;

type FileLock = heldlock_fs::FileLock<TokioRuntime>;

const WORKER: &str = env!("CARGO_BIN_EXE_heldlock-test-worker");

fn worker(args: &[&str]) -> Child {
    Command::new(WORKER).args(args).spawn().unwrap()
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A lock record as this process's probe would write it, for `pid` / `start`.
fn record_here(test: &str, pid: u32, start: &str) -> Option<LockRecord> {
    let fields = LocalHost::new().fields();
    if fields.len() < 4 {
        support::skip(
            test,
            &format!("no /proc identity on this machine: {fields:?}"),
        );
        return None;
    }
    let mut record = LockRecord::for_this_process(SystemTime::now());
    record.pid = pid;
    record.fields = fields
        .into_iter()
        .map(|(k, v)| {
            if k == "start" {
                (k, start.to_owned())
            } else {
                (k, v)
            }
        })
        .collect();
    Some(record)
}

fn write_record(path: &Path, record: &LockRecord) {
    std::fs::write(path, heldlock_fs::record::encode(record)).unwrap();
}

/// A pid that surely runs no process now: a child that was reaped.
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn a_sigkilled_holder_is_taken_over_long_before_stale() {
    let (dir, lock) = lock_path();
    let ready = dir.path().join("ready");
    let out = dir.path().join("waiter");
    let mut holder = worker(&["hold", s(&lock), s(&ready), "30000"]);
    let started = Instant::now();
    while !ready.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the holder never acquired"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut waiter = worker(&["acquire", s(&lock), s(&out), "30000"]);
    // Gated on the waiter waiting (listening for the release) on the live
    // holder, not on a guessed sleep.
    support::wait_until_waiting(waiter.id());
    assert!(!out.exists(), "nobody may take a live holder's lock");
    let killed = Instant::now();
    holder.kill().unwrap();
    // Reap only after the waiter is done: even a zombie holder must count as dead.
    assert!(waiter.wait().unwrap().success());
    let takeover = killed.elapsed();
    holder.wait().unwrap();
    assert!(
        takeover < Duration::from_secs(5),
        "takeover took {takeover:?} (stale is 30 s)"
    );
    assert!(trash_in(dir.path()).is_empty());
}

#[test]
fn a_live_pid_with_another_start_time_is_dead() {
    let Some(record) = record_here(
        "a_live_pid_with_another_start_time_is_dead",
        std::process::id(),
        "1",
    ) else {
        return;
    };
    let (_dir, path) = lock_path();
    write_record(&path, &record); // fresh mtime: not stale by age
    let lock = FileLock::new(
        &path,
        LockOptions::new(Duration::from_secs(30)).max_wait(Duration::from_secs(10)),
    )
    .unwrap();
    let started = Instant::now();
    let held = runtime().block_on(lock.acquire()).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "broken at once, not after stale"
    );
    drop(held);
}

#[test]
fn a_dead_pid_on_this_host_is_dead() {
    let Some(record) = record_here("a_dead_pid_on_this_host_is_dead", dead_pid(), "12345") else {
        return;
    };
    let (_dir, path) = lock_path();
    write_record(&path, &record);
    let lock = FileLock::new(
        &path,
        LockOptions::new(Duration::from_secs(30)).max_wait(Duration::from_secs(10)),
    )
    .unwrap();
    let started = Instant::now();
    drop(runtime().block_on(lock.acquire()).unwrap());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn records_from_elsewhere_are_never_judged_dead_by_pid() {
    let Some(here) = record_here(
        "records_from_elsewhere_are_never_judged_dead_by_pid",
        dead_pid(),
        "12345",
    ) else {
        return;
    };
    for other in ["host", "boot", "pidns", "(no fields)"] {
        let mut record = here.clone();
        if other == "(no fields)" {
            record.fields.clear(); // the reference's format
        }
        for (key, value) in &mut record.fields {
            if key == other {
                value.push_str("-elsewhere");
            }
        }
        let (_dir, path) = lock_path();
        write_record(&path, &record);
        let lock = FileLock::new(
            &path,
            LockOptions::new(Duration::from_secs(30)).max_wait(Duration::from_millis(300)),
        )
        .unwrap();
        match runtime().block_on(lock.acquire()) {
            Err(Error::Timeout { .. }) => {}
            other_outcome => panic!("a record from another {other} was broken: {other_outcome:?}"),
        }
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            heldlock_fs::record::encode(&record)
        );
    }
}

/// A smoke test of the whole path on real files. (Backoff from 1 ms would
/// also catch a release this early; that the waiter is woken by the release
/// itself is proven deterministically in heldlock-core's `lock_driver.rs` and
/// in heldlock-fs's `listen_fires_on_release_and_break`.)
#[test]
fn a_waiter_is_woken_by_the_release_not_by_its_poll() {
    let (_dir, path) = lock_path();
    // The holder is a bare backend: another "process" as far as the file is
    // concerned (no in-process queue between it and the waiter).
    let holder = Arc::new(FsBackend::new(&path).unwrap());
    let record = LockRecord::for_this_process(SystemTime::now());
    let rt = runtime();
    rt.block_on(holder.try_create(&record)).unwrap();
    let lock = FileLock::new(
        &path,
        LockOptions::new(Duration::from_secs(30))
            .poll(Duration::from_secs(10))
            .max_wait(Duration::from_secs(20)),
    )
    .unwrap();
    let released = rt.block_on(async {
        let waiting = tokio::spawn(async move {
            let held = lock.acquire().await;
            (Instant::now(), held.map(drop))
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let released = Instant::now();
        holder.release(&record.owner).await.unwrap();
        let (acquired, outcome) = waiting.await.unwrap();
        outcome.unwrap();
        acquired.duration_since(released)
    });
    assert!(
        released < Duration::from_secs(3),
        "woken {released:?} after the release (poll is 10 s)"
    );
}
