//! Tests of the release watcher: inotify, its fallbacks and its wake-ups.

use super::*;
use crate::test_support::{completes_within, skip};
use futures::FutureExt as _;

/// Whether the kernel gives this process an inotify descriptor, asked
/// apart from the code under test: where it does, a missing watcher is
/// a failure, not a skip.
fn inotify_works() -> bool {
    inotify::init(inotify::CreateFlags::CLOEXEC).is_ok()
}

/// Why an exit watch cannot be made here, asked apart from the code
/// under test (inotify, `/proc`, `pidfd_open`), or `None` if it can.
fn no_exit_watch_here() -> Option<&'static str> {
    let me = i32::try_from(std::process::id())
        .ok()
        .and_then(rustix::process::Pid::from_raw);
    let Some(me) = me else {
        return Some("our pid is no pid_t");
    };
    if !inotify_works() {
        Some("inotify unavailable here")
    } else if std::fs::read("/proc/self/stat").is_err() {
        Some("no /proc here")
    } else if rustix::process::pidfd_open(me, rustix::process::PidfdFlags::empty()).is_err() {
        Some("no pidfd_open here")
    } else {
        None
    }
}

#[test]
fn only_releases_in_a_loop_settle() {
    let now = std::time::Instant::now();
    assert!(!looping(None, now), "the first release wakes at once");
    let just = now.checked_sub(LOOPING / 20).unwrap_or(now);
    assert!(looping(Some(just), now), "a loop settles");
    if let Some(long_ago) = now.checked_sub(LOOPING * 5) {
        assert!(!looping(Some(long_ago), now), "a long hold wakes at once");
    }
}

#[test]
fn a_forked_child_does_not_use_its_parents_watcher() {
    let ours = std::process::id();
    if !inotify_works() {
        skip(
            "a_forked_child_does_not_use_its_parents_watcher",
            "inotify unavailable here",
        );
        return;
    }
    assert!(watcher_of(ours).is_some(), "inotify works: a watcher");
    // What a child forked without `exec` sees: the parent's watcher in
    // memory, made by another pid, whose thread did not follow it.
    assert!(watcher_of(ours.wrapping_add(1)).is_none());
    assert!(watcher_of(ours).is_some(), "still ours");
}

#[test]
fn removing_a_watched_lock_wakes_its_listener() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.lock");
    std::fs::write(&path, "x").unwrap();
    if !inotify_works() {
        skip(
            "removing_a_watched_lock_wakes_its_listener",
            "inotify unavailable here",
        );
        return;
    }
    let listener = lock_removed(&path).expect("inotify works: a listener");
    let other = lock_removed(&dir.path().join("other.lock")).unwrap();
    std::fs::rename(&path, dir.path().join("state.lock.releasing.x")).unwrap();
    // A generous bound: the event is immediate, the machine may be busy.
    assert!(completes_within(
        listener,
        std::time::Duration::from_secs(10)
    ));
    assert!(
        !completes_within(other, std::time::Duration::from_millis(200)),
        "another name stays quiet"
    );
}

#[test]
fn two_paths_to_one_directory_both_wake_their_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.lock"), dir.path().join("b.lock"));
    std::fs::write(&a, "x").unwrap();
    std::fs::write(&b, "x").unwrap();
    if !inotify_works() {
        skip(
            "two_paths_to_one_directory_both_wake_their_listeners",
            "inotify unavailable here",
        );
        return;
    }
    let first = lock_removed(&a).expect("inotify works: a listener");
    // The same directory by another path: the kernel gives it the same
    // watch, and both waiters must still hear of their lock's release.
    let other_path = tempfile::tempdir().unwrap();
    let link = other_path.path().join("link");
    std::os::unix::fs::symlink(dir.path(), &link).unwrap();
    let second = lock_removed(&link.join("b.lock")).unwrap();
    std::fs::rename(&a, dir.path().join("a.lock.releasing.x")).unwrap();
    std::fs::rename(&b, dir.path().join("b.lock.releasing.x")).unwrap();
    let limit = std::time::Duration::from_secs(10);
    assert!(completes_within(first, limit));
    assert!(completes_within(second, limit));
}

#[test]
fn a_child_exit_wakes_its_exit_listener() {
    let test = "a_child_exit_wakes_its_exit_listener";
    if let Some(reason) = no_exit_watch_here() {
        skip(test, reason);
        return;
    }
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let pid = child.id();
    let listener = crate::host::start_time(pid).and_then(|start| process_exit(pid, start));
    let Some(mut listener) = listener else {
        child.kill().unwrap();
        child.wait().unwrap();
        panic!("/proc, inotify and pidfd work here: an exit listener");
    };
    // Not a listener that is ready whatever happens: it waits while the
    // child runs.
    let early = (&mut listener).now_or_never();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(early.is_none(), "fired while the child ran");
    assert!(completes_within(
        listener,
        std::time::Duration::from_secs(10)
    ));
}

#[test]
fn a_reused_pid_counts_as_exited_at_once() {
    let test = "a_reused_pid_counts_as_exited_at_once";
    if let Some(reason) = no_exit_watch_here() {
        skip(test, reason);
        return;
    }
    let me = std::process::id();
    let start = crate::host::start_time(me).expect("/proc works: our start time");
    // Our own start time: we run, the listener waits.
    let mut ours = process_exit(me, start).expect("an exit listener of our own");
    assert!((&mut ours).now_or_never().is_none(), "we run");
    // Another start time: the pid names another process, gone already.
    let listener = process_exit(me, start + 1).expect("an exit listener for a reused pid");
    assert!(completes_within(
        listener,
        std::time::Duration::from_secs(10)
    ));
}
