//! `FsBackend::listen`: a waiter's listener fires when the lock's name is
//! released or broken (both rename it away), and not for other files.
#![allow(clippy::unwrap_used)]

use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use futures::executor::block_on;
use heldlock_core::{ChangeListener, Inspection, LockBackend, LockRecord};
use heldlock_fs::FsBackend;

mod support;

/// Whether `listener` completes within `limit` (run on its own thread).
fn fires_within(listener: ChangeListener, limit: Duration) -> bool {
    let (done, wait) = mpsc::channel();
    std::thread::spawn(move || {
        block_on(listener);
        let _ = done.send(());
    });
    wait.recv_timeout(limit).is_ok()
}

// The events are immediate; the generous bound is for a busy machine. The
// "stays quiet" bound only needs to be long enough to notice a wrong wake-up.
const FIRES: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(300);

#[test]
fn listen_fires_on_release_and_break() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.lock");
    let holder = FsBackend::new(&path).unwrap();
    let waiter = FsBackend::new(&path).unwrap();
    let record = LockRecord::for_this_process(SystemTime::now());
    block_on(holder.try_create(&record)).unwrap();

    if !support::inotify_available() {
        support::skip(
            "listen_fires_on_release_and_break",
            "inotify unavailable here",
        );
        return;
    }
    let listener = waiter.listen().expect("inotify works here: a listener");
    std::fs::write(dir.path().join("unrelated"), "x").unwrap();
    let refreshed = block_on(holder.refresh(&record.owner, SystemTime::now())).unwrap();
    assert_eq!(refreshed, heldlock_core::Refreshed::Refreshed);
    let quiet = waiter.listen().unwrap();
    assert!(
        !fires_within(quiet, QUIET),
        "a refresh or another file does not wake waiters"
    );
    block_on(holder.release(&record.owner)).unwrap();
    assert!(
        fires_within(listener, FIRES),
        "the release wakes the waiter"
    );

    // A break renames the lock away too.
    let record = LockRecord::for_this_process(SystemTime::now());
    block_on(holder.try_create(&record)).unwrap();
    let Inspection::Present(observed) = block_on(waiter.inspect()).unwrap() else {
        panic!("the lock is there");
    };
    let listener = waiter.listen().unwrap();
    block_on(waiter.break_if_unchanged(&observed)).unwrap();
    assert!(fires_within(listener, FIRES), "the break wakes the waiter");
}

#[test]
fn a_listener_taken_before_the_release_fires_even_if_polled_after() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.lock");
    let backend = FsBackend::new(&path).unwrap();
    let record = LockRecord::for_this_process(SystemTime::now());
    block_on(backend.try_create(&record)).unwrap();
    if !support::inotify_available() {
        support::skip(
            "a_listener_taken_before_the_release_fires_even_if_polled_after",
            "inotify unavailable here",
        );
        return;
    }
    let listener = backend.listen().expect("inotify works here: a listener");
    block_on(backend.release(&record.owner)).unwrap();
    // Give the watcher thread time to see the event before the first poll:
    // real time is what this test is about (the event comes before anyone
    // polls). A busy machine only makes the wait shorter than meant, which
    // weakens the test but never fails it.
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        fires_within(listener, FIRES),
        "no lost wake-up between subscribe and sleep"
    );
}
