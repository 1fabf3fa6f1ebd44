//! The waiter queue, across threads and processes.

use std::cell::RefCell;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use std::os::fd::OwnedFd;

use rustix::fs::{FileType, FlockOperation, Mode};

use super::*;
use crate::test_support::completes_within;

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
fn on_step(at: Step, action: impl FnOnce() + 'static) {
    AT_STEP.with(|actions| actions.borrow_mut().push((at, Box::new(action))));
}

/// Whether `member`'s files are the ones at their names.
fn in_place(member: &Membership) -> bool {
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

    fn listen(&self, lock: &Path) -> Option<ChangeListener> {
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

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Whether `dir` is (or soon becomes) empty.
fn empties(dir: &Path) -> bool {
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

pub(super) fn try_take_turn(other: &Membership) -> bool {
    other.try_lead().is_ok()
}

/// A held lock named `name`, another process at the head of its queue,
/// and this process's waiter queued behind it; `None` without inotify.
fn queued_behind_another(
    fx: &Fixture,
    name: &str,
) -> Option<(PathBuf, Membership, ChangeListener)> {
    let lock = fx.held_lock(name);
    let other = fx.other_process(&lock);
    assert!(try_take_turn(&other));
    let Some(follower) = fx.listen(&lock) else {
        eprintln!("inotify unavailable here; skipping");
        return None;
    };
    Some((lock, other, follower))
}

#[test]
fn a_follower_is_not_woken_by_releases_until_its_turn_comes() {
    let fx = fixture();
    let Some((lock, leader, follower)) = queued_behind_another(&fx, "follower.lock") else {
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
        eprintln!("inotify unavailable here; skipping");
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
    let Some((_lock, other, follower)) = queued_behind_another(&fx, "gave-up.lock") else {
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
fn a_process_that_queues_again_reuses_its_queue_thread() {
    let fx = fixture();
    let lock = fx.held_lock("again.lock");
    let other = fx.other_process(&lock);
    for round in 0..3 {
        assert!(try_take_turn(&other), "round {round}");
        let Some(follower) = fx.listen(&lock) else {
            eprintln!("inotify unavailable here; skipping");
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
    let Some((lock, other, first)) = queued_behind_another(&fx, "spellings.lock") else {
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
        eprintln!("inotify unavailable here; skipping");
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

/// A home without a runtime directory: a per-user directory in `tmp`.
fn temp_home(tmp: &Path) -> (Home, PathBuf) {
    let home = Home {
        runtime_dir: None,
        temp_dir: tmp.to_path_buf(),
    };
    let per_user = tmp.join(format!("heldlock-{}", rustix::process::geteuid().as_raw()));
    (home, per_user)
}

#[test]
fn without_a_runtime_directory_a_private_one_is_made_in_the_temporary_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (home, per_user) = temp_home(tmp.path());
    let locks = tempfile::tempdir().unwrap();
    let lock = locks.path().join("tmp.lock");
    std::fs::write(&lock, "held").unwrap();
    let Some(waiting) = listen_in(&lock, &home, None) else {
        eprintln!("inotify unavailable here; skipping");
        return;
    };
    let meta = std::fs::symlink_metadata(&per_user).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.mode() & 0o7777, 0o700);
    assert_eq!(meta.uid(), rustix::process::geteuid().as_raw());
    assert_eq!(entries(&per_user).len(), 2, "the queue files are in it");
    assert_eq!(entries(tmp.path()).len(), 1, "and nothing else is made");
    drop(waiting);
    // The empty private directory stays (see `Home::open_dir`).
    assert!(empties(&per_user));
}

/// Whether `home` uses `dir` for its queue files.
fn uses(home: &Home, dir: &Path) -> bool {
    let Ok(opened) = home.open_dir() else {
        return false;
    };
    let opened = rustix::fs::fstat(&opened).unwrap();
    std::fs::symlink_metadata(dir)
        .is_ok_and(|meta| (opened.st_dev, opened.st_ino) == (meta.dev(), meta.ino()))
}

/// Changes the owner of `path` to `nobody`; false when this process
/// may not (it does not run as root).
fn give_away(path: &Path) -> bool {
    match std::os::unix::fs::lchown(path, Some(65534), Some(65534)) {
        Ok(()) => true,
        Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => {
            eprintln!("cannot chown here ({error}); skipping that case");
            false
        }
        Err(error) => panic!("{error}"),
    }
}

#[test]
fn a_runtime_directory_that_is_not_private_is_passed_over() {
    /// Makes the case in a private directory; returns the runtime
    /// directory to give, `None` when the case cannot be made here.
    type Case = fn(&Path) -> Option<PathBuf>;
    let cases: [(&str, Case); 6] = [
        ("usable", |dir| Some(dir.to_path_buf())),
        ("relative", |_| Some(PathBuf::from("relative/runtime"))),
        ("missing", |dir| Some(dir.join("missing"))),
        ("mode 0755", |dir| {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            Some(dir.to_path_buf())
        }),
        ("a symbolic link", |dir| {
            let link = dir.with_extension("link");
            std::os::unix::fs::symlink(dir, &link).unwrap();
            Some(link)
        }),
        ("another user's", |dir| {
            give_away(dir).then(|| dir.to_path_buf())
        }),
    ];
    for (what, runtime_dir) in cases {
        let outer = tempfile::tempdir().unwrap();
        let runtime = outer.path().join("runtime");
        std::fs::create_dir(&runtime).unwrap();
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
        let tmp = outer.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let Some(runtime_dir) = runtime_dir(&runtime) else {
            continue;
        };
        let (mut home, per_user) = temp_home(&tmp);
        home.runtime_dir = Some(runtime_dir);
        if what == "usable" {
            assert!(uses(&home, &runtime), "{what}");
            assert!(
                entries(&tmp).is_empty(),
                "{what}: the temporary one is not made"
            );
        } else {
            assert!(uses(&home, &per_user), "{what}");
        }
    }
}

#[test]
fn a_per_user_directory_that_is_not_private_is_refused_and_everyone_watches() {
    /// Plants something at the per-user directory's name (the first
    /// path), given a private directory (the second); false when the
    /// case cannot be made here.
    type Plant = fn(&Path, &Path) -> bool;
    let cases: [(&str, Plant); 6] = [
        ("mode 0755", |dir, _| {
            std::fs::create_dir(dir).unwrap();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            true
        }),
        ("mode 0701", |dir, _| {
            std::fs::create_dir(dir).unwrap();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o701)).unwrap();
            true
        }),
        ("mode 0770", |dir, _| {
            std::fs::create_dir(dir).unwrap();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o770)).unwrap();
            true
        }),
        ("a symbolic link to a private directory", |dir, target| {
            std::os::unix::fs::symlink(target, dir).unwrap();
            true
        }),
        ("a regular file", |dir, _| {
            std::fs::write(dir, "").unwrap();
            true
        }),
        ("another user's", |dir, _| {
            std::fs::create_dir(dir).unwrap();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
            give_away(dir)
        }),
    ];
    for (what, plant) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let (home, per_user) = temp_home(tmp.path());
        let target = tmp.path().join("target");
        std::fs::create_dir(&target).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700)).unwrap();
        if !plant(&per_user, &target) {
            continue;
        }
        assert!(home.open_dir().is_err(), "{what}");
        let locks = tempfile::tempdir().unwrap();
        let lock = locks.path().join("refused.lock");
        std::fs::write(&lock, "held").unwrap();
        let name = queue_name(&lock).unwrap();
        assert!(join(&home, &name).is_err(), "{what}");
        let Some(watching) = listen_in(&lock, &home, None) else {
            eprintln!("inotify unavailable here; skipping");
            return;
        };
        // No queue: this waiter watches the lock itself, and is woken
        // by the release.
        std::fs::rename(&lock, locks.path().join("refused.lock.releasing.x")).unwrap();
        assert!(completes_within(watching, SOON), "{what}");
        assert!(
            entries(&target).is_empty(),
            "{what}: files in the link's target"
        );
        if std::fs::symlink_metadata(&per_user).unwrap().is_dir() {
            assert!(
                entries(&per_user).is_empty(),
                "{what}: files in the refused directory"
            );
        }
    }
}

/// Whether the user `nobody` can open `path` for reading, as it would
/// to `flock` it.
fn nobody_opens(path: &Path) -> bool {
    use std::os::unix::process::CommandExt;
    std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"exec 3< "$0""#)
        .arg(path)
        .current_dir("/")
        .uid(65534)
        .gid(65534)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[test]
fn another_user_cannot_open_the_queue_files() {
    if rustix::process::geteuid().as_raw() != 0 {
        eprintln!("not root: cannot run a process as another user; skipping");
        return;
    }
    let fx = fixture();
    // The check itself works: `nobody` opens a file it may read.
    let open = tempfile::tempdir().unwrap();
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let readable = open.path().join("readable");
    std::fs::write(&readable, "").unwrap();
    std::fs::set_permissions(&readable, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(nobody_opens(&readable), "the probe cannot open anything");

    let lock = fx.held_lock("private.lock");
    let member = fx.other_process(&lock);
    for name in [&member.turn_name, &member.waiters_name] {
        assert!(
            !nobody_opens(&fx.runtime.path().join(name)),
            "another user opened {name}"
        );
    }
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
