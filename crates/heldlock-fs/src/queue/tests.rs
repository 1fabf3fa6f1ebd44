//! The waiter queue, across threads and processes: processes take turns
//! watching a lock. Also the fixture and helpers the queue's other test
//! modules (`*_tests.rs`) share.

use std::cell::RefCell;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use super::*;
use crate::test_support::completes_within;
use rustix::fs::FlockOperation;

// Generous bounds: the events are immediate, the machine may be busy. The
// quiet periods are short: a wake-up would come within microseconds.
pub(super) const SOON: Duration = Duration::from_secs(10);
pub(super) const QUIET: Duration = Duration::from_millis(300);

type Action = Box<dyn FnOnce()>;

thread_local! {
    /// What a test does at a step of this thread's next join or leave.
    static AT_STEP: RefCell<Vec<(Step, Action)>> = const { RefCell::new(Vec::new()) };
}

/// Runs (once) what the test asked for at `at`.
pub(super) fn at_step(at: Step) {
    let action = AT_STEP.with(|actions| {
        let mut actions = actions.borrow_mut();
        let index = actions.iter().position(|(step, _)| *step == at)?;
        Some(actions.remove(index).1)
    });
    if let Some(action) = action {
        action();
    }
}

/// Has `action` run when this thread next reaches `at`.
pub(super) fn on_step(at: Step, action: impl FnOnce() + 'static) {
    AT_STEP.with(|actions| actions.borrow_mut().push((at, Box::new(action))));
}

/// Whether `member`'s files are the ones at their names.
pub(super) fn in_place(member: &Membership) -> bool {
    still_named(&member.dir, &member.waiters_name, &member.waiters) == Ok(true)
        && still_named(&member.dir, &member.turn_name, &member.turn) == Ok(true)
}

/// A test's own locks and queue directory: nothing of a test lands in
/// the real runtime or temporary directory.
pub(super) struct Fixture {
    pub(super) locks: tempfile::TempDir,
    /// The queue directory, given as the runtime directory.
    pub(super) runtime: tempfile::TempDir,
    pub(super) home: Home,
}

pub(super) fn fixture() -> Fixture {
    let locks = tempfile::tempdir().unwrap();
    let runtime = tempfile::tempdir().unwrap();
    std::fs::set_permissions(runtime.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let home = Home {
        runtime_dir: Some(runtime.path().to_path_buf()),
        // Never used while the runtime directory is fine; missing, so
        // that using it would fail.
        temp_dir: runtime.path().join("missing-tmp"),
    };
    Fixture {
        locks,
        runtime,
        home,
    }
}

impl Fixture {
    /// A held lock named `name`.
    pub(super) fn held_lock(&self, name: &str) -> PathBuf {
        let lock = self.locks.path().join(name);
        std::fs::write(&lock, "held").unwrap();
        lock
    }

    pub(super) fn listen(&self, lock: &Path) -> Option<ChangeListener> {
        listen_in(lock, &self.home, None)
    }

    /// Another process's place in the queue: its own open files.
    pub(super) fn other_process(&self, lock: &Path) -> Membership {
        join(&self.home, &queue_name(lock).unwrap()).expect("the queue opens")
    }

    /// Whether the queue directory ends up empty (the last membership
    /// may go on the queue thread, just after its waiter's listener).
    pub(super) fn no_queue_file_left(&self) -> bool {
        empties(self.runtime.path())
    }
}

pub(super) fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Whether `dir` is (or soon becomes) empty.
pub(super) fn empties(dir: &Path) -> bool {
    let deadline = Instant::now() + SOON;
    loop {
        let left = entries(dir);
        if left.is_empty() {
            return true;
        }
        if Instant::now() > deadline {
            eprintln!("left in {}: {left:?}", dir.display());
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reports `test` skipped (visibly, and failing where every test must
/// run): without inotify a waiter polls, and there is no queue to test.
pub(super) fn no_inotify(test: &str) {
    crate::test_support::skip(
        test,
        "inotify is unavailable here, so waiters poll and never queue",
    );
}

pub(super) fn try_take_turn(other: &Membership) -> bool {
    other.try_lead().is_ok()
}

/// A held lock named `name`, another process at the head of its queue,
/// and this process's waiter queued behind it; `None` without inotify.
fn queued_behind_another(
    fx: &Fixture,
    test: &str,
    name: &str,
) -> Option<(PathBuf, Membership, ChangeListener)> {
    let lock = fx.held_lock(name);
    let other = fx.other_process(&lock);
    assert!(try_take_turn(&other));
    let Some(follower) = fx.listen(&lock) else {
        no_inotify(test);
        return None;
    };
    Some((lock, other, follower))
}

#[test]
fn a_follower_is_not_woken_by_releases_until_its_turn_comes() {
    let fx = fixture();
    let Some((lock, leader, follower)) = queued_behind_another(
        &fx,
        "a_follower_is_not_woken_by_releases_until_its_turn_comes",
        "follower.lock",
    ) else {
        return;
    };
    std::fs::rename(&lock, fx.locks.path().join("state.lock.releasing.x")).unwrap();
    let (done, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        futures::executor::block_on(follower);
        let _ = done.send(());
    });
    assert!(
        wait.recv_timeout(QUIET).is_err(),
        "a follower was woken by a release"
    );
    leader.pass_turn();
    assert!(wait.recv_timeout(SOON).is_ok(), "the turn never came");

    // Now this process leads: its waiter watches the lock itself.
    let watching = fx.listen(&lock).unwrap();
    assert!(!try_take_turn(&leader), "the turn is this process's");
    std::fs::write(&lock, "held again").unwrap();
    std::fs::rename(&lock, fx.locks.path().join("state.lock.releasing.y")).unwrap();
    assert!(completes_within(watching, SOON));
    // Its last waiter gone, the process gives the turn up.
    assert!(try_take_turn(&leader), "the turn was not given up");
    drop(leader);
    assert!(fx.no_queue_file_left());
}

#[test]
fn a_woken_leader_keeps_its_turn_until_its_listener_is_dropped() {
    let fx = fixture();
    let lock = fx.held_lock("woken.lock");
    let other = fx.other_process(&lock);
    let Some(mut watching) = fx.listen(&lock) else {
        no_inotify("a_woken_leader_keeps_its_turn_until_its_listener_is_dropped");
        return;
    };
    assert!(!try_take_turn(&other), "this process leads");
    std::fs::rename(&lock, fx.locks.path().join("woken.lock.releasing.x")).unwrap();
    // Driven to completion but kept, as a waiter does while it
    // subscribes again and tries the lock.
    let (done, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        futures::executor::block_on(&mut watching);
        let _ = done.send(watching);
    });
    let watching = wait
        .recv_timeout(SOON)
        .expect("the release woke the leader");
    assert!(
        !try_take_turn(&other),
        "the turn passed on before the waiter stopped listening"
    );
    drop(watching);
    assert!(try_take_turn(&other), "the turn was not given up");
    drop(other);
    assert!(fx.no_queue_file_left());
}

#[test]
fn a_process_that_stopped_waiting_passes_its_turn_on() {
    let fx = fixture();
    let Some((_lock, other, follower)) = queued_behind_another(
        &fx,
        "a_process_that_stopped_waiting_passes_its_turn_on",
        "gave-up.lock",
    ) else {
        return;
    };
    drop(follower); // gave up while queued
    other.pass_turn();
    // This process's queue thread gets the turn, finds nobody waiting
    // here, and passes it on: the other process gets it back.
    let (done, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let taken = other.wait_for_turn();
        let _ = done.send((taken, other));
    });
    let (taken, other) = wait.recv_timeout(SOON).expect("the turn was kept");
    assert_eq!(taken, Ok(()));
    // This process left the queue with the turn: the other process is
    // its last member, and takes the files with it.
    drop(other);
    assert!(fx.no_queue_file_left());
}

#[test]
fn a_process_whose_waiters_stopped_while_queued_no_longer_keeps_the_files() {
    let test = "a_process_whose_waiters_stopped_while_queued_no_longer_keeps_the_files";
    let fx = fixture();
    let Some((lock, other, follower)) = queued_behind_another(&fx, test, "stopped.lock") else {
        return;
    };
    // Whether `other` is the only member: its trade for the waiters file
    // works. A failed trade loses its shared lock, which it takes back.
    let only_member = |other: &Membership| {
        let only =
            rustix::fs::flock(&other.waiters, FlockOperation::NonBlockingLockExclusive).is_ok();
        rustix::fs::flock(&other.waiters, FlockOperation::NonBlockingLockShared).unwrap();
        only
    };
    assert!(!only_member(&other), "a queued process counts as a member");
    // Its waiter stopped (it took the lock on its own poll, say) while its
    // queue thread still sleeps for the turn, which `other` keeps. Should
    // the process now exit before that thread runs again, the files must
    // go with `other`: so it no longer counts.
    drop(follower);
    assert!(
        only_member(&other),
        "a process with no waiter left kept counting as a member"
    );
    // A waiter that queues again before the turn came counts again.
    let again = fx.listen(&lock).unwrap();
    assert!(!only_member(&other), "a waiter queued again is not counted");
    drop(again);
    assert!(only_member(&other));
    drop(other);
    assert!(fx.no_queue_file_left());
}

#[test]
fn a_process_that_queues_again_reuses_its_queue_thread() {
    let fx = fixture();
    let lock = fx.held_lock("again.lock");
    let other = fx.other_process(&lock);
    for round in 0..3 {
        assert!(try_take_turn(&other), "round {round}");
        let Some(follower) = fx.listen(&lock) else {
            no_inotify("a_process_that_queues_again_reuses_its_queue_thread");
            return;
        };
        other.pass_turn();
        assert!(completes_within(follower, SOON), "round {round}: no turn");
        // The follower's listener is gone: the turn is given up again.
    }
    let turns = queues()
        .by_lock
        .get(&lock)
        .cloned()
        .expect("the entry lives on");
    assert_eq!(turns.state().threads_started, 1, "a thread per wait");
    assert!(
        turns.state().member.is_none(),
        "an idle process keeps no place in the queue"
    );
    drop(turns);
    // Idle for THREAD_IDLE, the thread ends and the entry is forgotten
    // (real time is what is tested: the bound is ten times the period).
    let deadline = Instant::now() + 10 * THREAD_IDLE;
    while queues().by_lock.contains_key(&lock) {
        assert!(Instant::now() < deadline, "the idle thread stayed");
        std::thread::sleep(THREAD_IDLE / 10);
    }
    drop(other);
    assert!(fx.no_queue_file_left());
}

#[test]
fn two_spellings_of_one_lock_share_one_place_in_the_queue() {
    let fx = fixture();
    let Some((lock, other, first)) = queued_behind_another(
        &fx,
        "two_spellings_of_one_lock_share_one_place_in_the_queue",
        "spellings.lock",
    ) else {
        return;
    };
    let elsewhere = tempfile::tempdir().unwrap();
    let link = elsewhere.path().join("link");
    std::os::unix::fs::symlink(fx.locks.path(), &link).unwrap();
    let spelled_otherwise = link.join("spellings.lock");
    let second = fx.listen(&spelled_otherwise).expect("inotify works here");
    {
        let queues = queues();
        let (a, b) = (&queues.by_lock[&lock], &queues.by_lock[&spelled_otherwise]);
        assert!(Arc::ptr_eq(a, b), "one process queued twice");
    }
    other.pass_turn();
    assert!(completes_within(first, SOON));
    assert!(completes_within(second, SOON));
    drop(other);
    assert!(fx.no_queue_file_left());
}

#[test]
fn nothing_is_left_once_the_last_waiter_leaves() {
    let fx = fixture();
    let lock = fx.held_lock("last.lock");
    let Some(first) = fx.listen(&lock) else {
        no_inotify("nothing_is_left_once_the_last_waiter_leaves");
        return;
    };
    let second = fx.listen(&lock).unwrap();
    let mut files = entries(fx.runtime.path());
    files.sort();
    let name = queue_name(&lock).unwrap();
    assert_eq!(files, [format!("{name}.turn"), format!("{name}.waiters")]);
    drop(first);
    assert_eq!(entries(fx.runtime.path()).len(), 2, "a waiter is left");
    drop(second);
    assert!(fx.no_queue_file_left());
}
