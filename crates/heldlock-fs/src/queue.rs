//! Same-host waiters of one lock take turns watching it.
//!
//! A release wakes whoever watches the lock's directory. With every waiting
//! process watching, every release wakes all of them, and under contention
//! all but one (usually all: the releasing process tends to take the lock
//! straight back) only find the lock taken again: CPU per hand-off grows with
//! the number of waiters. So the waiting processes of one host queue in the
//! kernel instead, for an exclusive `flock(2)` on a queue file of that lock
//! (see [`waiters_file`]). The process holding that `flock` (the *leader*)
//! watches the lock as before; the others sleep in `flock`, which costs
//! nothing and wakes nobody, until the leader stops waiting because it got
//! the lock, gave up, or died (the kernel drops a dead process's `flock`).
//! The kernel then hands the turn to the next process in line.
//!
//! The queue is a wake-up hint and decides nothing about the lock: every
//! waiter keeps its poll interval as the safety net, so a leader that hangs
//! while waiting (a stopped process) costs the others at most their poll
//! interval per attempt, never the lock. When the queue file cannot be opened
//! or `flock`ed, every waiter watches, as without the queue; when two
//! processes disagree on the queue file (another `TMPDIR`, a private `/tmp`),
//! each group has its own leader, which costs a wake-up each, nothing more.

use std::collections::HashMap;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use heldlock_core::ChangeListener;
use rustix::fs::{FlockOperation, Mode, OFlags};

use crate::watch::{self, Notify};

/// This process's place in one lock's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Not queued: nobody here waits, or nobody has asked yet.
    Idle,
    /// A thread of this process sleeps in `flock` for the turn.
    Queued,
    /// This process holds the turn: its waiter watches the lock.
    Leader,
}

#[derive(Debug)]
struct State {
    role: Role,
    /// The open queue file (its `flock` is the turn); kept while this
    /// process takes part in the queue or its queue thread lives.
    file: Option<Arc<OwnedFd>>,
    /// Live listeners of this process's waiters for this lock.
    interest: usize,
    /// Whether this entry's queue thread is alive (waiting for work, or in
    /// `flock`). It outlives one wait, so that a process that waits again
    /// and again does not start a thread each time.
    thread: bool,
    /// How many queue threads this entry started (one per idle period).
    threads_started: u32,
    /// The queue file's `flock` failed where it should not: every waiter of
    /// this process watches for as long as this entry lives.
    broken: bool,
}

/// One lock's queue, as seen from this process.
#[derive(Debug)]
struct Turns {
    waiters_file: PathBuf,
    state: Mutex<State>,
    /// Tells the queue thread that there is a turn to wait for.
    work: Condvar,
    /// Fired when this process becomes the leader.
    turn_came: Arc<Notify>,
}

impl Turns {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The queues this process takes part in.
#[derive(Debug, Default)]
struct Registry {
    /// By the lock path a waiter gave (found without a system call).
    by_lock: HashMap<PathBuf, Arc<Turns>>,
    /// By queue file: every path to one lock leads to one entry.
    by_file: HashMap<PathBuf, Arc<Turns>>,
}

fn queues() -> MutexGuard<'static, Registry> {
    static QUEUES: OnceLock<Mutex<Registry>> = OnceLock::new();
    QUEUES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// The queue file of the lock at `lock`: in the temporary directory (so that
/// the lock's own directory holds nothing but locks, and so that the queue
/// stays on this host even when the lock is on a network file system), named
/// after the lock's directory by device and inode (every path to it agrees)
/// and a stable hash of the lock's file name. `None` when the directory
/// cannot be found.
fn waiters_file(lock: &Path) -> Option<PathBuf> {
    let name = lock.file_name()?;
    let dir = match lock.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let dir = rustix::fs::stat(dir).ok()?;
    Some(std::env::temp_dir().join(format!(
        "heldlock-{:x}-{:x}-{:016x}.waiters",
        dir.st_dev,
        dir.st_ino,
        crate::record::stable_hash(crate::record::FNV_OFFSET_BASIS, name.as_bytes()),
    )))
}

/// A listener for a waiter of the lock at `path`: if this process leads the
/// queue, it completes when the lock is released (see
/// [`watch::lock_removed`]); otherwise it completes when this process's turn
/// to watch comes. `None` when the lock cannot be watched at all.
pub(crate) fn listen(path: &Path) -> Option<ChangeListener> {
    // Watching must work at all, or the queue only delays the poll.
    if !watch::available() {
        return None;
    }
    let Some(interest) = Interest::enter(path) else {
        return watch::lock_removed(path);
    };
    match interest.take_turn() {
        Taken::Lead => {
            // Should this directory not be watchable, the turn is given up
            // (with `interest`) and the waiter polls.
            let released = watch::lock_removed(path)?;
            Some(InLine::keep(interest, released))
        }
        // A follower does not watch the lock at all.
        Taken::Wait(turn) => Some(InLine::keep(interest, turn)),
        Taken::Unavailable => {
            drop(interest);
            watch::lock_removed(path)
        }
    }
}

/// A waiter's listener that keeps this process's place in the queue until
/// it is dropped, not merely until it completes: a leader woken by a release
/// keeps the turn while its waiter subscribes again and tries the lock,
/// instead of passing it to the next process first and queueing behind it.
struct InLine {
    _interest: Interest,
    listener: ChangeListener,
}

impl InLine {
    fn keep(interest: Interest, listener: ChangeListener) -> ChangeListener {
        Box::pin(InLine {
            _interest: interest,
            listener,
        })
    }
}

impl Future for InLine {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.listener.as_mut().poll(cx)
    }
}

/// What a waiter gets from the queue.
enum Taken {
    Lead,
    Wait(ChangeListener),
    Unavailable,
}

/// Keeps this process in a lock's queue while a waiter listens. The last one
/// to go gives the turn up.
struct Interest {
    turns: Arc<Turns>,
}

impl Interest {
    fn enter(path: &Path) -> Option<Self> {
        {
            let queues = queues();
            if let Some(turns) = queues.by_lock.get(path) {
                // Counted under the registry's mutex, so that no
                // `forget_if_idle` can drop the entry in between.
                turns.state().interest += 1;
                return Some(Interest {
                    turns: Arc::clone(turns),
                });
            }
        }
        // Found outside the registry's mutex: it stats a directory.
        let waiters_file = waiters_file(path)?;
        let mut queues = queues();
        // Another spelling of the same lock shares its queue entry: one
        // process must never queue behind itself.
        let turns = match queues.by_file.get(&waiters_file) {
            Some(turns) => Arc::clone(turns),
            None => {
                let fresh = Arc::new(Turns {
                    waiters_file: waiters_file.clone(),
                    state: Mutex::new(State {
                        role: Role::Idle,
                        file: None,
                        interest: 0,
                        thread: false,
                        threads_started: 0,
                        broken: false,
                    }),
                    work: Condvar::new(),
                    turn_came: Arc::default(),
                });
                queues.by_file.insert(waiters_file, Arc::clone(&fresh));
                fresh
            }
        };
        queues
            .by_lock
            .insert(path.to_path_buf(), Arc::clone(&turns));
        turns.state().interest += 1;
        Some(Interest { turns })
    }

    fn take_turn(&self) -> Taken {
        let turns = &self.turns;
        let mut state = turns.state();
        if state.broken {
            return Taken::Unavailable;
        }
        match state.role {
            Role::Leader => return Taken::Lead,
            Role::Queued => return Taken::Wait(turns.turn_came.listen()),
            Role::Idle => {}
        }
        let file = match &state.file {
            Some(file) => Arc::clone(file),
            None => {
                // Opened without the mutex: a file system can be slow.
                drop(state);
                let opened = open_waiters_file(&turns.waiters_file);
                state = turns.state();
                if state.role != Role::Idle || state.broken {
                    // Another waiter of this process got there meanwhile.
                    drop(state);
                    return self.take_turn();
                }
                match opened {
                    Ok(file) => Arc::clone(state.file.get_or_insert_with(|| Arc::new(file))),
                    Err(error) => {
                        tracing::debug!(%error, path = %turns.waiters_file.display(), "no waiter queue; every waiter watches");
                        return Taken::Unavailable;
                    }
                }
            }
        };
        match rustix::fs::flock(&*file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                state.role = Role::Leader;
                Taken::Lead
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {
                // Listen before the thread can fire, or its news is lost.
                let turn = turns.turn_came.listen();
                if state.thread {
                    turns.work.notify_one();
                } else {
                    let waiting = Arc::clone(turns);
                    let spawned = std::thread::Builder::new()
                        .name("heldlock-queue".into())
                        .spawn(move || queue_thread(&waiting));
                    if spawned.is_err() {
                        return Taken::Unavailable;
                    }
                    state.thread = true;
                    state.threads_started += 1;
                }
                state.role = Role::Queued;
                Taken::Wait(turn)
            }
            Err(error) => {
                tracing::debug!(%error, path = %turns.waiters_file.display(), "cannot flock the waiter queue; every waiter watches");
                state.file = None;
                Taken::Unavailable
            }
        }
    }
}

impl Drop for Interest {
    fn drop(&mut self) {
        let mut state = self.turns.state();
        state.interest -= 1;
        if state.interest > 0 {
            return;
        }
        match state.role {
            // The thread passes the turn on when it gets it.
            Role::Queued => {}
            Role::Leader | Role::Idle => {
                give_up_turn(&mut state);
                drop(state);
                forget_if_idle(&self.turns);
            }
        }
    }
}

/// Leaves the queue: the kernel wakes the next process in line.
fn give_up_turn(state: &mut State) {
    if state.role == Role::Leader
        && let Some(file) = &state.file
    {
        // Closing the file below would release the `flock` too; unlocking
        // first says so, and keeps the release independent of other clones.
        let _ = rustix::fs::flock(&**file, FlockOperation::Unlock);
    }
    state.role = Role::Idle;
    if !state.thread {
        state.file = None;
    }
}

/// Drops this process's entry for a lock nobody here waits for any more.
fn forget_if_idle(turns: &Arc<Turns>) {
    let mut queues = queues();
    let state = turns.state();
    if state.interest == 0
        && state.role == Role::Idle
        && !state.thread
        && queues
            .by_file
            .get(&turns.waiters_file)
            .is_some_and(|known| Arc::ptr_eq(known, turns))
    {
        queues.by_file.remove(&turns.waiters_file);
        queues.by_lock.retain(|_, known| !Arc::ptr_eq(known, turns));
    }
}

/// How long a queue thread with nothing to wait for stays, in case this
/// process waits for the lock again.
const THREAD_IDLE: Duration = Duration::from_secs(1);

/// The queue thread of one lock: whenever this process queues, it sleeps in
/// `flock` until this process's turn comes; it ends after [`THREAD_IDLE`]
/// without work.
fn queue_thread(turns: &Arc<Turns>) {
    loop {
        let file = {
            let mut state = turns.state();
            let mut idle_since = Instant::now();
            loop {
                if state.role == Role::Queued {
                    break;
                }
                let idle = idle_since.elapsed();
                if idle >= THREAD_IDLE {
                    state.thread = false;
                    if state.role == Role::Idle && state.interest == 0 {
                        state.file = None;
                    }
                    drop(state);
                    forget_if_idle(turns);
                    return;
                }
                let (next, timeout) = turns
                    .work
                    .wait_timeout(state, THREAD_IDLE - idle)
                    .unwrap_or_else(PoisonError::into_inner);
                state = next;
                if !timeout.timed_out() {
                    idle_since = Instant::now();
                }
            }
            state.file.clone()
        };
        let result = match &file {
            Some(file) => loop {
                match rustix::fs::flock(&**file, FlockOperation::LockExclusive) {
                    Err(rustix::io::Errno::INTR) => continue,
                    other => break other,
                }
            },
            None => Err(rustix::io::Errno::BADF),
        };
        let mut state = turns.state();
        match result {
            Ok(()) if state.interest > 0 => {
                state.role = Role::Leader;
                drop(state);
                turns.turn_came.notify();
            }
            Ok(()) => {
                // Nobody here waits any more: pass the turn on at once.
                state.role = Role::Leader;
                give_up_turn(&mut state);
            }
            Err(error) => {
                // Not expected (the non-blocking attempt worked on this
                // file). Wake the waiters: they look, and watch without the
                // queue.
                tracing::debug!(%error, "the waiter queue's flock failed");
                state.role = Role::Idle;
                state.file = None;
                state.broken = true;
                drop(state);
                turns.turn_came.notify();
            }
        }
    }
}

fn open_waiters_file(path: &Path) -> rustix::io::Result<OwnedFd> {
    // Read-only is enough for `flock`, and lets waiters of another user
    // share a queue file they cannot write. The temporary directory is
    // shared, so whatever another user put at this name is distrusted: a
    // symbolic link is not followed, and a FIFO or device is neither waited
    // for (`O_NONBLOCK`) nor made a terminal (`O_NOCTTY`), only refused.
    let flags =
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY;
    let mode = Mode::RUSR | Mode::WUSR | Mode::RGRP | Mode::ROTH;
    // An existing file is opened without `O_CREAT`: with it, Linux's
    // `fs.protected_regular` refuses another user's file in a sticky
    // directory such as `/tmp`, and the two users would never share a
    // queue. Only a missing file is created, exclusively; one that appears
    // meanwhile is opened on the second round.
    let mut attempts = 0;
    let file = loop {
        attempts += 1;
        match rustix::fs::open(path, flags, Mode::empty()) {
            Err(rustix::io::Errno::NOENT) if attempts < 3 => {}
            other => break other?,
        }
        match rustix::fs::open(path, flags | OFlags::CREATE | OFlags::EXCL, mode) {
            Err(rustix::io::Errno::EXIST) => continue,
            other => break other?,
        }
    };
    if rustix::fs::FileType::from_raw_mode(rustix::fs::fstat(&file)?.st_mode)
        != rustix::fs::FileType::RegularFile
    {
        return Err(rustix::io::Errno::INVAL);
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::test_support::completes_within;

    /// Another process's place in the queue: its own open file description.
    fn other_process(lock: &Path) -> OwnedFd {
        let file = waiters_file(lock).expect("the lock's directory exists");
        open_waiters_file(&file).expect("the queue file opens")
    }

    /// A held lock named `name` in a fresh directory, and another process's
    /// descriptor of its queue file (not yet in line).
    fn held_lock_and_another_process(name: &str) -> (tempfile::TempDir, PathBuf, OwnedFd) {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join(name);
        std::fs::write(&lock, "held").unwrap();
        let other = other_process(&lock);
        (dir, lock, other)
    }

    fn try_take_turn(other: &OwnedFd) -> bool {
        rustix::fs::flock(other, FlockOperation::NonBlockingLockExclusive).is_ok()
    }

    // Generous bounds: the events are immediate, the machine may be busy. The
    // quiet periods are short: a wake-up would come within microseconds.
    const SOON: Duration = Duration::from_secs(10);
    const QUIET: Duration = Duration::from_millis(300);

    /// A held lock named `name`, another process at the head of its queue,
    /// and this process's waiter queued behind it; `None` without inotify.
    ///
    /// Each test names its lock differently: a temporary directory may get
    /// the inode of one a test before just removed, and the queue file is
    /// named after the directory's inode and the lock's name, while this
    /// process's queue entries outlive a test by up to [`THREAD_IDLE`].
    fn queued_behind_another(
        name: &str,
    ) -> Option<(tempfile::TempDir, PathBuf, OwnedFd, ChangeListener)> {
        let (dir, lock, other) = held_lock_and_another_process(name);
        assert!(try_take_turn(&other));
        let Some(follower) = listen(&lock) else {
            eprintln!("inotify unavailable here; skipping");
            return None;
        };
        Some((dir, lock, other, follower))
    }

    #[test]
    fn a_follower_is_not_woken_by_releases_until_its_turn_comes() {
        let Some((dir, lock, leader, follower)) = queued_behind_another("follower.lock") else {
            return;
        };
        std::fs::rename(&lock, dir.path().join("state.lock.releasing.x")).unwrap();
        let (done, wait) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            futures::executor::block_on(follower);
            let _ = done.send(());
        });
        assert!(
            wait.recv_timeout(QUIET).is_err(),
            "a follower was woken by a release"
        );
        rustix::fs::flock(&leader, FlockOperation::Unlock).unwrap();
        assert!(wait.recv_timeout(SOON).is_ok(), "the turn never came");

        // Now this process leads: its waiter watches the lock itself.
        let watching = listen(&lock).unwrap();
        assert!(!try_take_turn(&leader), "the turn is this process's");
        std::fs::write(&lock, "held again").unwrap();
        std::fs::rename(&lock, dir.path().join("state.lock.releasing.y")).unwrap();
        assert!(completes_within(watching, SOON));
        // Its last waiter gone, the process gives the turn up.
        assert!(try_take_turn(&leader), "the turn was not given up");
    }

    #[test]
    fn a_woken_leader_keeps_its_turn_until_its_listener_is_dropped() {
        let (dir, lock, other) = held_lock_and_another_process("woken.lock");
        let Some(mut watching) = listen(&lock) else {
            eprintln!("inotify unavailable here; skipping");
            return;
        };
        assert!(!try_take_turn(&other), "this process leads");
        std::fs::rename(&lock, dir.path().join("woken.lock.releasing.x")).unwrap();
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
    }

    #[test]
    fn a_process_that_stopped_waiting_passes_its_turn_on() {
        let Some((_dir, _lock, other, follower)) = queued_behind_another("gave-up.lock") else {
            return;
        };
        drop(follower); // gave up while queued
        rustix::fs::flock(&other, FlockOperation::Unlock).unwrap();
        // This process's queue thread gets the turn, finds nobody waiting
        // here, and passes it on: the other process gets it back.
        let (done, wait) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let taken = rustix::fs::flock(&other, FlockOperation::LockExclusive);
            let _ = done.send(taken);
        });
        assert_eq!(wait.recv_timeout(SOON), Ok(Ok(())), "the turn was kept");
    }

    #[test]
    fn a_process_that_queues_again_reuses_its_queue_thread() {
        let (_dir, lock, other) = held_lock_and_another_process("again.lock");
        for round in 0..3 {
            assert!(try_take_turn(&other), "round {round}");
            let Some(follower) = listen(&lock) else {
                eprintln!("inotify unavailable here; skipping");
                return;
            };
            rustix::fs::flock(&other, FlockOperation::Unlock).unwrap();
            assert!(completes_within(follower, SOON), "round {round}: no turn");
            // The follower's listener is gone: the turn is given up again.
        }
        let turns = queues()
            .by_lock
            .get(&lock)
            .cloned()
            .expect("the entry lives on");
        assert_eq!(turns.state().threads_started, 1, "a thread per wait");
        drop(turns);
        // Idle for THREAD_IDLE, the thread ends and the entry is forgotten
        // (real time is what is tested: the bound is ten times the period).
        let deadline = std::time::Instant::now() + 10 * THREAD_IDLE;
        while queues().by_lock.contains_key(&lock) {
            assert!(
                std::time::Instant::now() < deadline,
                "the idle thread stayed"
            );
            std::thread::sleep(THREAD_IDLE / 10);
        }
    }

    #[test]
    fn two_spellings_of_one_lock_share_one_place_in_the_queue() {
        let Some((dir, lock, other, first)) = queued_behind_another("spellings.lock") else {
            return;
        };
        let elsewhere = tempfile::tempdir().unwrap();
        let link = elsewhere.path().join("link");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        let spelled_otherwise = link.join("spellings.lock");
        let second = listen(&spelled_otherwise).expect("inotify works here");
        {
            let queues = queues();
            let (a, b) = (&queues.by_lock[&lock], &queues.by_lock[&spelled_otherwise]);
            assert!(Arc::ptr_eq(a, b), "one process queued twice");
        }
        rustix::fs::flock(&other, FlockOperation::Unlock).unwrap();
        assert!(completes_within(first, SOON));
        assert!(completes_within(second, SOON));
    }

    #[test]
    fn a_fifo_at_the_queue_file_name_is_refused_not_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("fifo.lock");
        let file = waiters_file(&lock).unwrap();
        let _ = std::fs::remove_file(&file);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &file,
            rustix::fs::FileType::Fifo,
            Mode::RUSR | Mode::WUSR,
            0,
        )
        .unwrap();
        let (done, opened) = std::sync::mpsc::channel();
        let probe = file.clone();
        std::thread::spawn(move || {
            let _ = done.send(open_waiters_file(&probe).map(|_| ()));
        });
        // Opening a FIFO for reading would wait for a writer forever.
        let result = opened.recv_timeout(SOON);
        std::fs::remove_file(&file).unwrap();
        assert_eq!(result, Ok(Err(rustix::io::Errno::INVAL)));
    }

    #[test]
    fn a_queue_file_is_opened_as_found_and_created_when_missing() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let file = waiters_file(&dir.path().join("found.lock")).unwrap();
        let _ = std::fs::remove_file(&file);
        // Missing: created, readable by others, empty.
        drop(open_waiters_file(&file).unwrap());
        let created = std::fs::metadata(&file).unwrap();
        assert_eq!(created.permissions().mode() & 0o004, 0o004);
        assert_eq!(created.len(), 0);
        // Found (here made read-only, as another user's would be to us):
        // opened as it is, the same file.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o444)).unwrap();
        let opened = open_waiters_file(&file).unwrap();
        let seen = rustix::fs::fstat(&opened).unwrap();
        assert_eq!(seen.st_ino, created.ino());
        drop(opened);
        std::fs::remove_file(&file).unwrap();
    }

    #[test]
    fn every_path_to_a_lock_names_the_same_queue() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("state.lock");
        let through_dot = dir.path().join(".").join("state.lock");
        assert_eq!(waiters_file(&lock), waiters_file(&through_dot));
        assert_ne!(
            waiters_file(&lock),
            waiters_file(&dir.path().join("other.lock"))
        );
        assert_eq!(waiters_file(&dir.path().join("missing/state.lock")), None);
    }
}
