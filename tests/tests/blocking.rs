//! The blocking API (`heldlock::blocking`): the same protocol and machines,
//! no async runtime. The reference behaviours also run on its thread runtime
//! (`lock_behaviors.rs`, the `threads` variants).
#![allow(clippy::unwrap_used)]

mod support;

use std::fs;
use std::time::{Duration, Instant, SystemTime};

use heldlock::blocking::FileLock;
use heldlock::{Error, LockOptions, Released};
use support::*;

fn options() -> LockOptions {
    LockOptions::new(Duration::from_secs(5))
}

#[test]
fn blocking_acquire_refresh_release() {
    let (dir, path) = lock_path();
    let lock = FileLock::new(&path, options()).unwrap();
    let held = lock.acquire().unwrap();
    let content = fs::read_to_string(&path).unwrap();
    assert!(content.contains(held.owner().as_str()));
    set_mtime(&path, ago(Duration::from_secs(60)));
    assert!(held.refresh().unwrap());
    assert!(mtime(&path) > ago(Duration::from_secs(5)));
    assert_eq!(held.release().unwrap(), Released::Released);
    assert!(!path.exists());
    assert!(trash_in(dir.path()).is_empty());
}

#[test]
fn blocking_try_acquire_is_none_while_held_and_drop_releases() {
    let (_dir, path) = lock_path();
    let lock = FileLock::new(&path, options()).unwrap();
    let held = lock.acquire().unwrap();
    assert!(
        FileLock::new(&path, options())
            .unwrap()
            .try_acquire()
            .unwrap()
            .is_none()
    );
    drop(held);
    assert!(!path.exists());
    assert!(lock.try_acquire().unwrap().is_some());
}

#[test]
fn blocking_acquire_times_out_naming_the_holder() {
    let (_dir, path) = lock_path();
    write_reference_lock(&path, 99, OTHER_OWNER, SystemTime::now());
    let lock = FileLock::new(&path, options().max_wait(Duration::from_millis(100))).unwrap();
    let started = Instant::now();
    let error = lock.acquire().unwrap_err();
    assert!(matches!(error, Error::Timeout { .. }), "{error}");
    assert!(error.to_string().contains("pid 99"), "{error}");
    // Real time is what is tested: 100 ms of waiting, far under 5 s.
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn blocking_with_lock_runs_locked_or_best_effort() {
    let (_dir, path) = lock_path();
    let lock = FileLock::new(&path, options()).unwrap();
    let locked = lock.with_lock(|state| (state.acquired(), state.refresh().unwrap()));
    assert_eq!(locked, (true, true));
    assert!(!path.exists());

    write_reference_lock(&path, 1, OTHER_OWNER, SystemTime::now());
    let busy = FileLock::new(&path, options().max_wait(Duration::from_millis(1))).unwrap();
    let unlocked =
        busy.with_lock(|state| (state.acquired(), state.is_lost(), state.refresh().unwrap()));
    assert_eq!(unlocked, (false, true, false));
}

#[test]
fn blocking_heartbeat_thread_notices_a_replacement() {
    let (_dir, path) = lock_path();
    let lock = FileLock::new(
        &path,
        LockOptions::new(Duration::from_millis(600)).heartbeat(Duration::from_millis(20)),
    )
    .unwrap();
    let held = lock.acquire().unwrap();
    assert!(
        !held.wait_lost(Duration::from_millis(100)),
        "not lost while ours"
    );
    replace_lock(&path, OTHER_OWNER, ago(Duration::from_secs(10)));
    // The heartbeat runs every 20 ms; 10 s is a generous bound on a busy machine.
    assert!(held.wait_lost(Duration::from_secs(10)));
    assert!(held.is_lost());
    assert_eq!(held.release().unwrap(), Released::NotOurs);
}

#[test]
fn blocking_heartbeat_keeps_a_long_hold_fresh() {
    let (_dir, path) = lock_path();
    // Real time is what is tested: a hold longer than `stale` that only the
    // heartbeat keeps fresh. Not a guessed sleep: the hold lasts until the
    // heartbeat has stamped the lock 1.5 stale after the acquire; `stale`
    // leaves the heartbeat (every 50 ms) half a second of slack on a busy
    // machine.
    let stale = Duration::from_millis(600);
    let quick = LockOptions::new(stale).heartbeat(Duration::from_millis(50));
    let before = SystemTime::now();
    let held = FileLock::new(&path, quick.clone())
        .unwrap()
        .acquire()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(30), || mtime(&path)
            >= before + stale * 3 / 2),
        "the heartbeat never stamped the lock"
    );
    let contender = FileLock::new(&path, quick.max_wait(Duration::from_millis(150))).unwrap();
    assert!(contender.try_acquire().unwrap().is_none());
    assert!(held.refresh().unwrap());
}

#[test]
fn blocking_invalid_input_is_refused() {
    assert!(matches!(
        FileLock::new("", options()),
        Err(Error::InvalidResource { .. })
    ));
    assert!(matches!(
        FileLock::new("x.lock", LockOptions::new(Duration::ZERO)),
        Err(Error::Options(_))
    ));
}
