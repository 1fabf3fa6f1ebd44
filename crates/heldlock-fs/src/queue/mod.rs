//! Same-host waiters of one lock take turns watching it.
//!
//! A release wakes whoever watches the lock's directory. With every waiting
//! process watching, every release wakes all of them, and under contention
//! all but one (usually all: the releasing process tends to take the lock
//! straight back) only find the lock taken again: CPU per hand-off grows with
//! the number of waiters. So the waiting processes of one host queue in the
//! kernel instead, for an exclusive `flock(2)` on a queue file of that lock
//! (see [`queue_name`]). The process holding that `flock` (the *leader*)
//! watches the lock as before; the others sleep in `flock`, which costs
//! nothing and wakes nobody, until the leader stops waiting because it got
//! the lock, gave up, or died (the kernel drops a dead process's `flock`).
//! The kernel then hands the turn to the next process in line.
//!
//! The queue files live in a directory of this user's own (see [`Home`]), so
//! no other user can hold a turn forever, and they are removed by the last
//! process to stop waiting (see [`Membership`]), so none is left once nobody
//! waits.
//!
//! The queue is a wake-up hint and decides nothing about the lock: every
//! waiter keeps its poll interval as the safety net, so a leader that hangs
//! while waiting (a stopped process) costs the others at most their poll
//! interval per attempt, never the lock. When the queue directory is not
//! private or the queue files cannot be opened or `flock`ed, every waiter
//! watches, as without the queue; when two processes disagree on the queue
//! directory (another `XDG_RUNTIME_DIR` or `TMPDIR`, another user, a private
//! `/tmp`), each group has its own leader, which costs a wake-up each,
//! nothing more.
//!
//! Bounded waiting (`LockOptions::bounded_wait`) adds a third file, a
//! *starving mark*: the queue thread of a leader whose process has waited
//! past its bound makes it, and an acquirer with the option that finds it
//! before its first try queues behind the leader instead of taking the lock
//! back ([`wait_behind_older`]). The leader removes it as it leaves the
//! queue, and so does whoever removes the queue's files. Like the queue, it
//! decides who tries when, never who holds the lock.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use heldlock_core::ChangeListener;
use rustix::io::Errno;

use crate::watch::{self, Notify};

#[cfg(test)]
mod bounded_tests;
mod files;
#[cfg(test)]
mod files_tests;
#[cfg(test)]
mod home_tests;
#[cfg(test)]
mod tests;

use files::*;

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
    /// This process's membership of the queue while it takes part (queued or
    /// leading). Not kept while idle, even while the queue thread lives: a
    /// member keeps the last one to leave from removing the queue files.
    member: Option<Arc<Membership>>,
    /// Live listeners of this process's waiters for this lock.
    interest: usize,
    /// Whether this entry's queue thread is alive (waiting for work, or in
    /// `flock`). It outlives one wait, so that a process that waits again
    /// and again does not start a thread each time.
    thread: bool,
    /// How many queue threads this entry started (one per idle period).
    threads_started: u32,
    /// The turn's `flock` failed where it should not: every waiter of this
    /// process watches for as long as this entry lives.
    broken: bool,
    /// Bounded waiting: how long this process may wait before, leading, it
    /// marks the queue starving; `None`: it takes no part. Set by its
    /// waiters.
    bound: Option<Duration>,
    /// Since when this process's waiters have waited without a break
    /// (while any listens).
    waiting_since: Option<Instant>,
    /// Whether this leadership has tried to mark the queue starving.
    marked: bool,
    /// Whether it did: the mark is there, its removal owed.
    mark_made: bool,
}

/// Which queue: where its files are, and their name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct QueueId {
    home: Home,
    name: String,
}

/// One lock's queue, as seen from this process.
#[derive(Debug)]
struct Turns {
    id: QueueId,
    state: Mutex<State>,
    /// Tells the queue thread that there is a turn to wait for.
    work: Condvar,
    /// Fired when this process becomes the leader.
    turn_came: Arc<Notify>,
}

impl State {
    /// One more waiter of this process listens, with bounded waiting's
    /// `bound` (the last one given counts).
    fn start_waiting(&mut self, bound: Option<Duration>) {
        self.interest += 1;
        self.bound = bound;
        self.waiting_since.get_or_insert_with(Instant::now);
    }
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
    /// By queue: every path to one lock leads to one entry.
    by_queue: HashMap<QueueId, Arc<Turns>>,
}

fn queues() -> MutexGuard<'static, Registry> {
    static QUEUES: OnceLock<Mutex<Registry>> = OnceLock::new();
    QUEUES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// A listener for a waiter of the lock at `path`: if this process leads the
/// queue, it completes when the lock is released (see
/// [`watch::lock_removed`]); otherwise it completes when this process's turn
/// to watch comes. `None` when the lock cannot be watched at all.
///
/// With bounded waiting (`bound`), the queue thread of a leader whose
/// process has waited for longer than `bound` marks the queue starving; see
/// [`wait_behind_older`].
pub(crate) fn listen(path: &Path, bound: Option<Duration>) -> Option<ChangeListener> {
    listen_in(path, &Home::from_env(), bound)
}

fn listen_in(path: &Path, home: &Home, bound: Option<Duration>) -> Option<ChangeListener> {
    // Watching must work at all, or the queue only delays the poll.
    if !watch::available() {
        return None;
    }
    let Some(interest) = Interest::enter(path, home, bound) else {
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
    fn enter(path: &Path, home: &Home, bound: Option<Duration>) -> Option<Self> {
        {
            let queues = queues();
            if let Some(turns) = queues.by_lock.get(path)
                && turns.id.home == *home
            {
                // Counted under the registry's mutex, so that no
                // `forget_if_idle` can drop the entry in between.
                turns.state().start_waiting(bound);
                return Some(Interest {
                    turns: Arc::clone(turns),
                });
            }
        }
        // Found outside the registry's mutex: it stats a directory.
        let id = QueueId {
            home: home.clone(),
            name: queue_name(path)?,
        };
        let mut queues = queues();
        // Another spelling of the same lock shares its queue entry: one
        // process must never queue behind itself.
        let turns = match queues.by_queue.get(&id) {
            Some(turns) => Arc::clone(turns),
            None => {
                let fresh = Arc::new(Turns {
                    id: id.clone(),
                    state: Mutex::new(State {
                        role: Role::Idle,
                        member: None,
                        interest: 0,
                        thread: false,
                        threads_started: 0,
                        broken: false,
                        bound,
                        waiting_since: None,
                        marked: false,
                        mark_made: false,
                    }),
                    work: Condvar::new(),
                    turn_came: Arc::default(),
                });
                queues.by_queue.insert(id, Arc::clone(&fresh));
                fresh
            }
        };
        queues
            .by_lock
            .insert(path.to_path_buf(), Arc::clone(&turns));
        turns.state().start_waiting(bound);
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
            Role::Queued => {
                // Its waiters may all have stopped meanwhile (see `Drop`).
                if let Some(member) = &state.member {
                    member.count_again();
                }
                return Taken::Wait(turns.turn_came.listen());
            }
            Role::Idle => {}
        }
        // Idle, this process is no member (see `give_up_turn`). It joins
        // without the mutex: a file system can be slow.
        drop(state);
        let joined = join(&turns.id.home, &turns.id.name);
        state = turns.state();
        if state.role != Role::Idle || state.broken || state.member.is_some() {
            // Another waiter of this process got there meanwhile. Leaving
            // again removes nothing: that waiter's membership is a member.
            drop(state);
            drop(joined);
            return self.take_turn();
        }
        let member = match joined {
            Ok(member) => Arc::clone(state.member.insert(Arc::new(member))),
            Err(error) => {
                tracing::debug!(%error, queue = %turns.id.name, "no waiter queue; every waiter watches");
                return Taken::Unavailable;
            }
        };
        match member.try_lead() {
            Ok(()) => {
                start_leading(&mut state);
                // Bounded waiting: the queue thread marks the queue
                // starving once this process's wait outlasts its bound. Without
                // the thread, nothing is marked: waiting stays unbounded,
                // as without the option.
                if state.bound.is_some() {
                    let _ = wake_queue_thread(turns, &mut state);
                }
                Taken::Lead
            }
            Err(Errno::WOULDBLOCK) => {
                // Listen before the thread can fire, or its news is lost.
                let turn = turns.turn_came.listen();
                state.role = Role::Queued;
                if !wake_queue_thread(turns, &mut state) {
                    state.role = Role::Idle;
                    let leaving = state.member.take();
                    drop(state);
                    drop((member, leaving));
                    return Taken::Unavailable;
                }
                Taken::Wait(turn)
            }
            Err(error) => {
                tracing::debug!(%error, queue = %turns.id.name, "cannot flock the waiter queue; every waiter watches");
                let leaving = state.member.take();
                drop(state);
                drop((member, leaving));
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
        state.waiting_since = None;
        match state.role {
            // The thread passes the turn on when it gets it; until then this
            // process no longer counts as a member, so that the files go
            // with the others' last leaver even if this process exits first.
            Role::Queued => {
                if let Some(member) = &state.member {
                    member.stop_counting();
                }
            }
            Role::Leader | Role::Idle => {
                let leaving = give_up_turn(&mut state);
                drop(state);
                drop(leaving);
                forget_if_idle(&self.turns);
            }
        }
    }
}

/// Leaves the queue: the kernel wakes the next process in line. Returns the
/// membership, for the caller to drop (and so maybe remove the queue files)
/// once it has let go of the state's mutex.
#[must_use]
fn give_up_turn(state: &mut State) -> Option<Arc<Membership>> {
    if state.role == Role::Leader
        && let Some(member) = &state.member
    {
        if state.bound.is_some() || state.mark_made {
            // Before the turn passes, so that the next leader never finds
            // the mark of a wait that is over.
            member.unmark_starving();
        }
        if state.mark_made {
            watch::starving(false);
        }
        member.pass_turn();
    }
    state.role = Role::Idle;
    state.marked = false;
    state.mark_made = false;
    state.member.take()
}

/// Drops this process's entry for a lock nobody here waits for any more.
fn forget_if_idle(turns: &Arc<Turns>) {
    let mut queues = queues();
    let state = turns.state();
    if state.interest == 0
        && state.role == Role::Idle
        && !state.thread
        && queues
            .by_queue
            .get(&turns.id)
            .is_some_and(|known| Arc::ptr_eq(known, turns))
    {
        queues.by_queue.remove(&turns.id);
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
        let member = {
            let mut state = turns.state();
            let mut idle_since = Instant::now();
            loop {
                if state.role == Role::Queued {
                    break;
                }
                let now = Instant::now();
                let mark_at = starving_at(&state);
                if mark_at.is_some_and(|at| at <= now) {
                    mark_starving(&mut state);
                    idle_since = now;
                    continue;
                }
                let idle = now.saturating_duration_since(idle_since);
                if idle >= THREAD_IDLE && mark_at.is_none() {
                    state.thread = false;
                    drop(state);
                    forget_if_idle(turns);
                    return;
                }
                let mut wait = THREAD_IDLE.saturating_sub(idle);
                if let Some(at) = mark_at {
                    wait = wait.min(at.saturating_duration_since(now));
                }
                let (next, timeout) = turns
                    .work
                    .wait_timeout(state, wait)
                    .unwrap_or_else(PoisonError::into_inner);
                state = next;
                if !timeout.timed_out() {
                    idle_since = Instant::now();
                }
            }
            state.member.clone()
        };
        let result = match &member {
            Some(member) => member.wait_for_turn(),
            None => Err(Errno::BADF),
        };
        // Let go before anyone hears of the turn (the state keeps the
        // membership): when the waiter's listener goes, the membership must
        // go with it at once, not when this thread next runs, or a process
        // that exits in between leaves the queue files behind.
        drop(member);
        let mut state = turns.state();
        // What the state let go of goes after its mutex.
        let leaving = match result {
            Ok(()) if state.interest > 0 => {
                start_leading(&mut state);
                drop(state);
                turns.turn_came.notify();
                None
            }
            Ok(()) => {
                // Nobody here waits any more: pass the turn on at once.
                state.role = Role::Leader;
                let leaving = give_up_turn(&mut state);
                drop(state);
                leaving
            }
            Err(error) => {
                // Not expected (the non-blocking attempt worked on this
                // file). Wake the waiters: they look, and watch without the
                // queue.
                tracing::debug!(%error, "the waiter queue's flock failed");
                state.role = Role::Idle;
                let leaving = state.member.take();
                state.broken = true;
                drop(state);
                turns.turn_came.notify();
                leaving
            }
        };
        drop(leaving);
    }
}

/// This process has just taken the turn.
fn start_leading(state: &mut State) {
    state.role = Role::Leader;
    state.marked = false;
}

/// Has the queue thread wait for this process's turn (`Queued`) or for its
/// leadership's bound (`Leader`), starting the thread if there is none;
/// whether there is one.
fn wake_queue_thread(turns: &Arc<Turns>, state: &mut State) -> bool {
    if state.thread {
        turns.work.notify_one();
        return true;
    }
    let waiting = Arc::clone(turns);
    let spawned = std::thread::Builder::new()
        .name("heldlock-queue".into())
        .spawn(move || queue_thread(&waiting));
    if spawned.is_err() {
        return false;
    }
    state.thread = true;
    state.threads_started += 1;
    true
}

/// Bounded waiting: when this process's leadership, if it leads with a
/// bound and has not marked the queue yet, has waited past its bound: from
/// the start of its waiters' wait, not of its leadership, so that a waiter
/// that queued long behind others marks the moment its turn comes.
fn starving_at(state: &State) -> Option<Instant> {
    if state.role != Role::Leader || state.marked || state.member.is_none() {
        return None;
    }
    Some(state.waiting_since? + state.bound?)
}

/// Marks the queue starving for this leadership (once: a failure is not
/// retried, and leaves waiting unbounded, as without the option).
fn mark_starving(state: &mut State) {
    state.marked = true;
    let Some(member) = &state.member else {
        return;
    };
    match member.mark_starving() {
        Ok(()) => {
            state.mark_made = true;
            watch::starving(true);
        }
        Err(error) => tracing::debug!(%error, "cannot mark the waiter queue starving"),
    }
}

/// Bounded waiting, for an acquirer about to try the lock at `path` for the
/// first time: when the leader of its host's waiters marked the queue
/// starving (at `mark`, see [`starving_mark`]), a listener that keeps this
/// process in line behind it and completes when this process's turn comes,
/// or at once when the turn is free. `None` (try at once) when there is no
/// mark, when this process leads the queue itself, or when it cannot queue.
pub(crate) fn wait_behind_older(
    path: &Path,
    mark: &Path,
    bound: Duration,
) -> Option<ChangeListener> {
    wait_behind_older_in(path, mark, Home::from_env, bound)
}

/// [`wait_behind_older`], with the queue directory found by `home` only once
/// a mark is there.
fn wait_behind_older_in(
    path: &Path,
    mark: &Path,
    home: impl FnOnce() -> Home,
    bound: Duration,
) -> Option<ChangeListener> {
    // The common case, one system call and nothing else (not even the
    // environment read for the queue directory): nobody starves.
    rustix::fs::access(mark, rustix::fs::Access::EXISTS).ok()?;
    let home = home();
    if !watch::available() {
        return None;
    }
    let interest = Interest::enter(path, &home, Some(bound))?;
    match interest.take_turn() {
        // The mark is this process's own, or the starving leader is gone:
        // nobody to wait for.
        Taken::Lead => Some(InLine::keep(interest, Box::pin(std::future::ready(())))),
        Taken::Wait(turn) => Some(InLine::keep(interest, turn)),
        Taken::Unavailable => None,
    }
}

/// Where the starving mark of the lock at `path`'s queue would be, for
/// [`wait_behind_older`]; `None` when there is no queue to mark.
pub(crate) fn starving_mark(path: &Path) -> Option<PathBuf> {
    starving_mark_in(path, &Home::from_env())
}

fn starving_mark_in(path: &Path, home: &Home) -> Option<PathBuf> {
    Some(home.dir_path()?.join(starving_name(&queue_name(path)?)))
}
