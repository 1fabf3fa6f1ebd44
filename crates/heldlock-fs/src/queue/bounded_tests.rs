//! Bounded waiting: the starving mark of a leader that led past its bound,
//! and the acquirers that wait behind it.

use std::sync::mpsc::{self, Receiver};

use super::tests::{Fixture, QUIET, SOON, fixture, try_take_turn};
use super::*;
use crate::test_support::skip;

/// Drives `listener` on a thread of its own; the receiver gets it back
/// once it completed (kept, as a waiter keeps its place while it tries).
fn driven(mut listener: ChangeListener) -> Receiver<ChangeListener> {
    let (done, wait) = mpsc::channel();
    std::thread::spawn(move || {
        futures::executor::block_on(&mut listener);
        let _ = done.send(listener);
    });
    wait
}

/// Whether `path` comes to exist within [`SOON`] (the leader's queue
/// thread makes the mark once the bound passed).
fn appears(path: &Path) -> bool {
    let deadline = Instant::now() + SOON;
    while !path.exists() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

impl Fixture {
    fn mark(&self, lock: &Path) -> PathBuf {
        starving_mark_in(lock, &self.home).expect("the queue directory is private")
    }

    fn listen_bounded(&self, lock: &Path, bound: Duration) -> Option<ChangeListener> {
        listen_in(lock, &self.home, Some(bound))
    }

    fn wait_behind(&self, lock: &Path) -> Option<ChangeListener> {
        wait_behind_older_in(lock, &self.mark(lock), || self.home.clone(), Duration::ZERO)
    }
}

#[test]
fn a_leader_past_its_bound_marks_the_queue_and_unmarks_it_as_it_leaves() {
    let fx = fixture();
    let lock = fx.held_lock("starving.lock");
    let mark = fx.mark(&lock);
    let Some(leading) = fx.listen_bounded(&lock, Duration::from_millis(20)) else {
        skip(
            "a_leader_past_its_bound_marks_the_queue_and_unmarks_it_as_it_leaves",
            "inotify is not available here",
        );
        return;
    };
    assert!(
        appears(&mark),
        "a leader past its bound did not mark the queue"
    );
    // Its waiter tried, found the lock taken, and listens again: the mark
    // stays while the first listener goes.
    let again = fx.listen_bounded(&lock, Duration::from_millis(20)).unwrap();
    drop(leading);
    assert!(mark.exists(), "the mark went while the waiter still waits");
    drop(again);
    assert!(!mark.exists(), "a leader that left kept its mark");
    assert!(fx.no_queue_file_left());
}

#[test]
fn a_leader_within_its_bound_or_without_one_marks_nothing() {
    let fx = fixture();
    let patient = fx.held_lock("patient.lock");
    let unbounded = fx.held_lock("unbounded.lock");
    let Some(first) = listen_in(&patient, &fx.home, Some(Duration::from_secs(3600))) else {
        skip(
            "a_leader_within_its_bound_or_without_one_marks_nothing",
            "inotify is not available here",
        );
        return;
    };
    let second = listen_in(&unbounded, &fx.home, None).unwrap();
    // A mark would come within microseconds of a zero bound; these have
    // none, or one of an hour.
    std::thread::sleep(QUIET);
    assert!(!fx.mark(&patient).exists(), "marked within its bound");
    assert!(!fx.mark(&unbounded).exists(), "marked without a bound");
    drop((first, second));
    assert!(fx.no_queue_file_left());
}

#[test]
fn without_a_mark_an_acquirer_tries_at_once_and_joins_nothing() {
    let fx = fixture();
    let lock = fx.held_lock("free.lock");
    let other = fx.other_process(&lock);
    assert!(try_take_turn(&other), "another process leads, not starving");
    assert!(fx.wait_behind(&lock).is_none());
    assert!(
        !try_take_turn(&fx.other_process(&lock)),
        "the turn is still the other process's"
    );
    drop(other);
    assert!(fx.no_queue_file_left());
}

#[test]
fn an_acquirer_waits_behind_a_starving_leader_until_its_turn_comes() {
    let fx = fixture();
    let lock = fx.held_lock("behind.lock");
    let other = fx.other_process(&lock);
    assert!(try_take_turn(&other));
    other.mark_starving().unwrap();
    let Some(behind) = fx.wait_behind(&lock) else {
        skip(
            "an_acquirer_waits_behind_a_starving_leader_until_its_turn_comes",
            "inotify is not available here",
        );
        return;
    };
    let done = driven(behind);
    assert!(
        done.recv_timeout(QUIET).is_err(),
        "the acquirer went before the starving leader"
    );
    // The leader got the lock: it unmarks and passes the turn on.
    other.unmark_starving();
    other.pass_turn();
    let behind = done.recv_timeout(SOON).expect("the turn never came");
    assert!(!try_take_turn(&other), "the acquirer leads while it tries");
    drop(behind);
    assert!(try_take_turn(&other), "the acquirer kept the turn");
    drop(other);
    assert!(fx.no_queue_file_left());
}

#[test]
fn a_leader_never_waits_behind_its_own_mark() {
    let fx = fixture();
    let lock = fx.held_lock("own.lock");
    let Some(leading) = fx.listen_bounded(&lock, Duration::ZERO) else {
        skip(
            "a_leader_never_waits_behind_its_own_mark",
            "inotify is not available here",
        );
        return;
    };
    assert!(appears(&fx.mark(&lock)));
    let own = fx.wait_behind(&lock).expect("a mark is there");
    let own = driven(own)
        .recv_timeout(SOON)
        .expect("a leader waited behind itself");
    drop((leading, own));
    assert!(fx.no_queue_file_left());
}

#[test]
fn a_mark_left_by_a_leader_that_died_lasts_one_leader_at_most() {
    let fx = fixture();
    let lock = fx.held_lock("orphan.lock");
    let mark = fx.mark(&lock);
    let other = fx.other_process(&lock);
    assert!(try_take_turn(&other));
    other.mark_starving().unwrap();
    let Some(behind) = fx.wait_behind(&lock) else {
        skip(
            "a_mark_left_by_a_leader_that_died_lasts_one_leader_at_most",
            "inotify is not available here",
        );
        return;
    };
    let done = driven(behind);
    // The starving leader dies: the kernel drops its `flock`s, its mark
    // stays.
    drop(other);
    let behind = done.recv_timeout(SOON).expect("the turn never came");
    assert!(mark.exists());
    // The next leader leaves (it got the lock): the mark goes with it.
    drop(behind);
    assert!(
        !mark.exists(),
        "a dead leader's mark outlived the next leader"
    );
    assert!(fx.no_queue_file_left());
}

#[test]
fn a_mark_nobody_is_left_to_remove_goes_with_the_queue() {
    let fx = fixture();
    let lock = fx.held_lock("last.lock");
    let other = fx.other_process(&lock);
    assert!(try_take_turn(&other));
    other.mark_starving().unwrap();
    // The starving leader dies, last of its queue.
    drop(other);
    assert!(fx.no_queue_file_left(), "the mark outlived its queue");
}

#[test]
fn a_member_of_a_removed_queue_leaves_the_new_queues_mark_alone() {
    let fx = fixture();
    let lock = fx.held_lock("renewed.lock");
    // This process stopped counting while in line, and the queue's files
    // went with the others' last leaver.
    let stale = fx.other_process(&lock);
    assert!(stale.stop_counting(), "the only member removes the files");
    // A newcomer makes new ones, leads, and starves.
    let leader = fx.other_process(&lock);
    assert!(try_take_turn(&leader));
    leader.mark_starving().unwrap();
    let mark = fx.mark(&lock);
    assert!(mark.exists());
    // The stale member gets its old turn and gives it up, as its queue
    // thread does: the new leader's mark stays, and it makes none.
    stale.unmark_starving();
    assert!(mark.exists(), "a stale member removed the new queue's mark");
    assert_eq!(stale.mark_starving(), Err(Errno::STALE));
    drop(stale);
    assert!(mark.exists());
    drop(leader);
    assert!(fx.no_queue_file_left());
}

#[test]
fn a_forked_child_leaves_its_parents_mark_alone() {
    let fx = fixture();
    let lock = fx.held_lock("forked.lock");
    let parent = fx.other_process(&lock);
    assert!(try_take_turn(&parent));
    parent.mark_starving().unwrap();
    let mark = fx.mark(&lock);
    // A child forked without `exec` shares the parent's membership: the
    // same files and pid recorded, but another process id of its own.
    let mut child = fx.other_process(&lock);
    child.pid = std::process::id().wrapping_add(1);
    child.unmark_starving();
    assert!(mark.exists(), "a forked child removed its parent's mark");
    assert_eq!(child.mark_starving(), Err(Errno::STALE));
    drop(child);
    drop(parent);
    assert!(fx.no_queue_file_left());
}
