//! The queue's files (`files.rs`): the name a lock's queue goes by, and
//! members joining and leaving its files, alone, racing one another, or
//! finding what a killed member left.

use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;

use rustix::fs::{FileType, FlockOperation, Mode};

use super::tests::{SOON, entries, fixture, in_place, on_step, try_take_turn};
use super::*;
use crate::test_support::completes_within;

#[test]
fn every_path_to_a_lock_names_the_same_queue() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("state.lock");
    let through_dot = dir.path().join(".").join("state.lock");
    assert_eq!(queue_name(&lock), queue_name(&through_dot));
    assert_ne!(
        queue_name(&lock),
        queue_name(&dir.path().join("other.lock"))
    );
    assert_eq!(queue_name(&dir.path().join("missing/state.lock")), None);
}

#[test]
fn a_queue_name_tells_one_inode_numbers_directories_apart_by_birth() {
    let lock = b"state.lock";
    let hash = crate::record::stable_hash(crate::record::FNV_OFFSET_BASIS, lock);
    // Two directories that had inode 0x2a in turn, 28 ms apart.
    let first = name_of(0xfe00, 0x2a, Some((1_796_589_563, 29_731_721)), lock);
    let next = name_of(0xfe00, 0x2a, Some((1_796_589_563, 57_731_721)), lock);
    assert_eq!(
        first,
        format!("heldlock-fe00-2a-6b15c7fb01c5ab89-{hash:016x}")
    );
    assert_ne!(first, next);
    // No birth time known: device and inode alone.
    let unknown = name_of(0xfe00, 0x2a, None, lock);
    assert_eq!(unknown, format!("heldlock-fe00-2a-{hash:016x}"));
    let before_1970 = name_of(1, 2, Some((-1, 999_999_999)), lock);
    for name in [&first, &next, &unknown, &before_1970] {
        assert!(is_queue_name(name), "{name}: the sweep must know it");
    }
}

/// A directory made in `parent` with the device and inode number
/// `(dev, ino)` of one just removed, if this file system hands that
/// number out again within a few tries (ext4 does at once; tmpfs never).
fn dir_reusing(parent: &Path, (dev, ino): (u64, u64)) -> Option<PathBuf> {
    for attempt in 0..100 {
        let dir = parent.join(format!("reuse-{attempt}"));
        std::fs::create_dir(&dir).unwrap();
        let meta = std::fs::metadata(&dir).unwrap();
        if (meta.dev(), meta.ino()) == (dev, ino) {
            return Some(dir);
        }
        // Removed again, so that the next one may get the number.
        std::fs::remove_dir(&dir).unwrap();
    }
    None
}

/// The flake of `a_waiter_is_woken_by_the_release_not_by_its_poll`
/// (tests/tests/liveness.rs: "woken 9.8 s after the release, poll 10 s").
/// A removed directory's inode number goes to the next directory made, so
/// a queue named by device and inode alone was also the queue of every
/// later directory with that number. A process still in the removed
/// directory's queue (stopped; or waiting on a directory made again at the
/// same path, whose queue it keeps; or slow to notice the removal) then
/// held the turn of an unrelated lock, whose waiter, a follower, does not
/// watch: it slept through the release until its poll.
#[test]
fn a_directory_that_reuses_a_removed_ones_inode_number_has_a_queue_of_its_own() {
    let test = "a_directory_that_reuses_a_removed_ones_inode_number_has_a_queue_of_its_own";
    // Decided apart from the code under test: without inotify the listener
    // below cannot be had at all.
    if rustix::fs::inotify::init(rustix::fs::inotify::CreateFlags::CLOEXEC).is_err() {
        crate::test_support::skip(test, "inotify unavailable here");
        return;
    }
    let fx = fixture();
    let removed = fx.locks.path().join("removed");
    std::fs::create_dir(&removed).unwrap();
    let meta = std::fs::metadata(&removed).unwrap();
    let old_lock = removed.join("state.lock");
    std::fs::write(&old_lock, "held").unwrap();
    // Another process in the old directory's queue keeps its turn.
    let straggler = fx.other_process(&old_lock);
    assert!(try_take_turn(&straggler));
    std::fs::remove_dir_all(&removed).unwrap();

    let Some(made) = dir_reusing(fx.locks.path(), (meta.dev(), meta.ino())) else {
        crate::test_support::skip(
            test,
            "this file system does not hand out a removed directory's inode number again",
        );
        return;
    };
    let lock = made.join("state.lock");
    std::fs::write(&lock, "held").unwrap();
    let waiter = fx.listen(&lock).expect("inotify works: a listener");
    std::fs::rename(&lock, made.join("state.lock.releasing.x")).unwrap();
    assert!(
        completes_within(waiter, SOON),
        "the release of a lock in a new directory did not wake its waiter: it was queued \
         behind a process in the queue of the removed directory whose inode number it reuses"
    );
    drop(straggler);
    assert!(fx.no_queue_file_left());
}

#[test]
fn queue_files_are_private_and_shared_by_the_members() {
    let fx = fixture();
    let lock = fx.held_lock("members.lock");
    let (first, second) = (fx.other_process(&lock), fx.other_process(&lock));
    for (name, file) in [
        (&first.waiters_name, &first.waiters),
        (&first.turn_name, &first.turn),
    ] {
        let meta = std::fs::symlink_metadata(fx.runtime.path().join(name)).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.mode() & 0o077, 0, "{name} is open to others");
        assert_eq!(meta.uid(), rustix::process::geteuid().as_raw());
        assert_eq!(still_named(&first.dir, name, file), Ok(true));
    }
    let inode = |file: &OwnedFd| rustix::fs::fstat(file).unwrap().st_ino;
    assert_eq!(inode(&first.turn), inode(&second.turn));
    assert_eq!(inode(&first.waiters), inode(&second.waiters));
    // A member that leaves while another stays removes nothing.
    drop(first);
    assert_eq!(entries(fx.runtime.path()).len(), 2);
    drop(second);
    assert!(
        entries(fx.runtime.path()).is_empty(),
        "the last member removes at once"
    );
}

#[test]
fn a_newcomer_that_opened_a_removed_queue_file_starts_over() {
    let fx = fixture();
    let lock = fx.held_lock("newcomer.lock");
    let last = fx.other_process(&lock);
    let runtime = fx.runtime.path().to_path_buf();
    let (left, removed) = std::sync::mpsc::channel();
    // The last member leaves (and removes the files) just after the
    // newcomer opened the waiters file, before it locks it.
    on_step(Step::WaitersOpened, move || {
        drop(last);
        let _ = left.send(entries(&runtime).is_empty());
    });
    let newcomer = fx.other_process(&lock);
    assert_eq!(
        removed.try_recv(),
        Ok(true),
        "the last member removed the files"
    );
    assert!(in_place(&newcomer), "the newcomer joined removed files");
    drop(newcomer);
    assert!(fx.no_queue_file_left());
}

#[test]
fn a_newcomer_never_gets_the_turn_file_being_removed() {
    let fx = fixture();
    let lock = fx.held_lock("between.lock");
    let (home, name) = (fx.home.clone(), queue_name(&lock).unwrap());
    let newcomer = Arc::new(Mutex::new(None));
    let joined = Arc::clone(&newcomer);
    // A newcomer comes while the last member is removing the files.
    on_step(Step::BetweenRemovals, move || {
        *joined.lock().unwrap() = Some(join(&home, &name));
    });
    drop(fx.other_process(&lock));
    let newcomer = newcomer.lock().unwrap().take().expect("the newcomer came");
    match newcomer {
        // It waited for nothing: it watches instead.
        Err(NoQueue::Busy) => {}
        Ok(member) => assert!(in_place(&member), "the newcomer joined removed files"),
        Err(error) => panic!("{error}"),
    }
}

#[test]
fn a_remover_stopped_halfway_stops_no_newcomer() {
    let fx = fixture();
    let lock = fx.held_lock("stopped.lock");
    let remover = fx.other_process(&lock);
    // The last member, stopped right after it took the waiters file
    // for itself.
    rustix::fs::flock(&remover.waiters, FlockOperation::NonBlockingLockExclusive).unwrap();
    let (done, joined) = std::sync::mpsc::channel();
    let home = fx.home.clone();
    let name = queue_name(&lock).unwrap();
    std::thread::spawn(move || {
        let _ = done.send(join(&home, &name).map(|_| ()));
    });
    assert_eq!(joined.recv_timeout(SOON), Ok(Err(NoQueue::Busy)));
    if let Some(watching) = fx.listen(&lock) {
        // Without the queue, the waiter watches the lock itself.
        std::fs::rename(&lock, fx.locks.path().join("stopped.lock.releasing.x")).unwrap();
        assert!(completes_within(watching, SOON));
    }
    drop(remover);
    assert!(fx.no_queue_file_left());
}

#[test]
fn members_that_come_and_go_never_split_the_queue() {
    let fx = fixture();
    let lock = fx.held_lock("churn.lock");
    let name = queue_name(&lock).unwrap();
    let home = fx.home.clone();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (home, name) = (home.clone(), name.clone());
            std::thread::spawn(move || {
                let mut busy = 0;
                for _ in 0..300 {
                    // Each thread's memberships are their own open
                    // files, as another process's would be.
                    let member = match join(&home, &name) {
                        Ok(member) => member,
                        Err(NoQueue::Busy) => {
                            busy += 1;
                            continue;
                        }
                        Err(error) => panic!("{error}"),
                    };
                    std::thread::yield_now();
                    for file in [&member.waiters_name, &member.turn_name] {
                        let own = if file == &member.waiters_name {
                            &member.waiters
                        } else {
                            &member.turn
                        };
                        assert_eq!(
                            still_named(&member.dir, file, own),
                            Ok(true),
                            "a member's {file} was removed or replaced"
                        );
                    }
                    if member.try_lead().is_ok() {
                        std::thread::yield_now();
                    }
                }
                busy
            })
        })
        .collect();
    let busy: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(busy < 4 * 300, "nobody ever joined");
    assert!(entries(fx.runtime.path()).is_empty());
}

#[test]
fn queues_nobody_left_are_swept_by_the_next_last_member() {
    let fx = fixture();
    let dir = fx.runtime.path();
    let touch = |name: &str| std::fs::write(dir.join(name), "").unwrap();
    // Left by processes killed while they waited: a whole queue; the
    // waiters file of one whose remover was killed between its two
    // removals; the turn file of one whose removal of it failed.
    let lone_waiters = "heldlock-1-3-0123456789abcdef.waiters";
    let lone_turn = "heldlock-1-4-0123456789abcdef.turn";
    for left in [
        "heldlock-1-2-0123456789abcdef.waiters",
        "heldlock-1-2-0123456789abcdef.turn",
        // Named with its directory's birth time too.
        "heldlock-1-5-6b0e4d3b01c5a2e9-0123456789abcdef.waiters",
        "heldlock-1-5-6b0e4d3b01c5a2e9-0123456789abcdef.turn",
        lone_waiters,
        lone_turn,
    ] {
        touch(left);
    }
    // Not heldlock's queue files: never touched.
    let others = [
        "heldlock-x.turn",
        "heldlock-1-2-3.waiters",
        "bus",
        "heldlock-1-2-0123456789abcdef.lock",
    ];
    for other in others {
        touch(other);
    }
    // A queue in use.
    let active = fx.other_process(&fx.held_lock("active.lock"));
    let mut expected: Vec<String> = others.iter().map(|other| other.to_string()).collect();
    expected.extend([active.turn_name.clone(), active.waiters_name.clone()]);
    expected.sort();

    // Some queue empties.
    drop(fx.other_process(&fx.held_lock("emptied.lock")));
    let mut left = entries(dir);
    left.sort();
    assert_eq!(left, expected);
    drop(active);
    let mut left = entries(dir);
    left.sort();
    let mut others = others.map(str::to_owned);
    others.sort();
    assert_eq!(left, others);
}

#[test]
fn a_fifo_at_a_queue_file_name_is_refused_not_waited_for() {
    let fx = fixture();
    let lock = fx.locks.path().join("fifo.lock");
    let name = queue_name(&lock).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        fx.runtime.path().join(format!("{name}.waiters")),
        FileType::Fifo,
        Mode::RUSR | Mode::WUSR,
        0,
    )
    .unwrap();
    let (done, joined) = std::sync::mpsc::channel();
    let home = fx.home.clone();
    std::thread::spawn(move || {
        let _ = done.send(join(&home, &name).map(|_| ()));
    });
    // Opening a FIFO for reading would wait for a writer forever.
    assert_eq!(joined.recv_timeout(SOON), Ok(Err(NoQueue::NotAFile)));
}
