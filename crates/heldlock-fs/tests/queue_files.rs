//! The waiter queue's files, across real processes: waiters of one lock, in
//! child processes of this test whose `XDG_RUNTIME_DIR` is the test's own
//! private directory (the queue directory of the code under test is found in
//! the environment, and a test cannot change its own process's), queue in
//! that directory and leave nothing in it once the last of them is gone.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use heldlock_core::{LockBackend, LockRecord};
use heldlock_fs::FsBackend;
use support::*;

/// Set in a child: the lock it waits for.
const WAIT_FOR: &str = "HELDLOCK_TEST_QUEUE_WAIT_FOR";

const SOON: Duration = Duration::from_secs(10);

/// A child waiter of the lock at `lock`, with `queue` as its runtime
/// directory; it says `listening` once it is in the queue.
fn waiter(lock: &Path, queue: &Path) -> (Child, BufReader<ChildStdout>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "a_child_waiter",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WAIT_FOR, lock)
        .env("XDG_RUNTIME_DIR", queue)
        // Never used while the runtime directory is private.
        .env("TMPDIR", queue.join("missing-tmp"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    // The harness's `test a_child_waiter ... ` comes first on the line.
    while !line.contains("listening") {
        line.clear();
        assert_ne!(
            out.read_line(&mut line).unwrap(),
            0,
            "the waiter ended early"
        );
    }
    (child, out)
}

/// Not a test of its own: the body of a child waiter.
#[test]
fn a_child_waiter() {
    let Some(lock) = std::env::var_os(WAIT_FOR) else {
        return;
    };
    let backend = FsBackend::new(&lock).unwrap();
    let Some(listener) = backend.listen() else {
        println!("listening (no inotify)");
        return;
    };
    // The queue directory of this process is the test's.
    assert_eq!(
        Some(queue_dir().into_os_string()),
        std::env::var_os("XDG_RUNTIME_DIR")
    );
    println!("listening");
    // Woken by the release (the leader) or by its turn (a follower), then
    // gone: its place in the queue goes with it.
    block_on(listener);
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn wait_for_exit(child: &mut Child) -> bool {
    let deadline = Instant::now() + SOON;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status.success();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

#[test]
fn waiters_of_one_user_share_a_private_queue_and_leave_nothing_behind() {
    if std::env::var_os(WAIT_FOR).is_some() {
        return;
    }
    // Decided apart from the code under test: a queue that is never
    // made where inotify works is a failure, not a skip.
    if !inotify_available() {
        support::skip(
            "waiters_of_one_user_share_a_private_queue_and_leave_nothing_behind",
            "inotify unavailable here",
        );
        return;
    }
    let locks = tempfile::tempdir().unwrap();
    let queue = tempfile::tempdir().unwrap();
    std::fs::set_permissions(queue.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let lock = lock_path(locks.path());
    let holder = FsBackend::new(&lock).unwrap();
    let record = LockRecord::for_this_process(SystemTime::now());
    block_on(holder.try_create(&record)).unwrap();

    let mut waiters: Vec<_> = (0..3).map(|_| waiter(&lock, queue.path())).collect();
    let files = entries(queue.path());
    // One queue for the three processes: its two files, and nothing else.
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files[0].ends_with(".turn") && files[1].ends_with(".waiters"));
    // Named as the helpers that look for files left behind expect: else
    // their "nothing left" could not fail.
    let prefix = queue_prefix(locks.path());
    assert!(
        files.iter().all(|name| name.starts_with(&prefix)),
        "{files:?}, not {prefix}"
    );
    for name in &files {
        let meta = std::fs::symlink_metadata(queue.path().join(name)).unwrap();
        assert_eq!(meta.mode() & 0o077, 0, "{name} is open to others");
    }
    assert!(trash_in(locks.path()).is_empty());

    block_on(holder.release(&record.owner)).unwrap();
    // The leader is woken by the release and leaves; each follower in turn
    // gets the turn, and leaves.
    for (child, _) in &mut waiters {
        assert!(wait_for_exit(child), "a waiter was not woken");
    }
    assert_eq!(entries(queue.path()), Vec::<String>::new());
    assert_eq!(
        queue_files_left(locks.path()),
        Vec::<String>::new(),
        "nor anything in this process's queue directory"
    );
}

#[test]
fn the_files_of_a_killed_waiter_go_when_another_queue_empties() {
    if std::env::var_os(WAIT_FOR).is_some() {
        return;
    }
    // Decided apart from the code under test: a queue that is never
    // made where inotify works is a failure, not a skip.
    if !inotify_available() {
        support::skip(
            "the_files_of_a_killed_waiter_go_when_another_queue_empties",
            "inotify unavailable here",
        );
        return;
    }
    let locks = tempfile::tempdir().unwrap();
    let queue = tempfile::tempdir().unwrap();
    std::fs::set_permissions(queue.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let holder = FsBackend::new(locks.path().join("first.lock")).unwrap();
    let record = LockRecord::for_this_process(SystemTime::now());
    block_on(holder.try_create(&record)).unwrap();

    // Killed while it waited: it never left the queue.
    let (mut killed, _) = waiter(&locks.path().join("first.lock"), queue.path());
    killed.kill().unwrap();
    killed.wait().unwrap();
    assert_eq!(entries(queue.path()).len(), 2, "the killed waiter's files");

    // Another lock's waiter leaves last, and takes those files with its own.
    let second = FsBackend::new(locks.path().join("second.lock")).unwrap();
    block_on(second.try_create(&record)).unwrap();
    let (mut waiting, _out) = waiter(&locks.path().join("second.lock"), queue.path());
    assert_eq!(entries(queue.path()).len(), 4);
    block_on(second.release(&record.owner)).unwrap();
    assert!(wait_for_exit(&mut waiting), "the waiter was not woken");
    assert_eq!(entries(queue.path()), Vec::<String>::new());
    block_on(holder.release(&record.owner)).unwrap();
}
