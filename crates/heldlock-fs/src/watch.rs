//! Waking waiters when a lock may have become free, without a runtime.
//!
//! One watcher thread per process (started on first use) polls:
//!
//! * an inotify descriptor watching the directories of locks that someone
//!   waits for: a rename of a lock's name (`IN_MOVED_FROM`: release and
//!   break both rename the lock away) wakes that lock's waiters, unless the
//!   name is taken again by the time the event is read;
//! * pidfds of same-host holders (Linux `pidfd_open`): a pidfd becomes
//!   readable when its process exits, which wakes the waiters of that holder
//!   the moment it dies.
//!
//! Waiters hold [`ChangeListener`] futures. Registrations are shared per lock
//! path and per holder, and are dropped once no listener refers to them. When
//! anything here is unavailable (no inotify, watch limit reached, no pidfd),
//! the functions return `None` and waiters fall back to polling.

use std::collections::HashMap;
use std::ffi::OsString;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::task::{Context, Poll, Waker};

use heldlock_core::ChangeListener;

use crate::host::Liveness;
use rustix::event::{PollFd, PollFlags};
use rustix::fs::inotify::{self, ReadFlags, WatchFlags};

/// How long the watcher lets a release in a loop of releases (see
/// [`LOOPING`]) settle before it looks whether the lock is free (see
/// `read_inotify`). With the timer slack of a normal thread (50 µs) the
/// sleep lasts about 0.1 ms, which is what a hand-off to a waiter of a
/// really free lock loses in latency; in exchange, a waiter is not woken
/// only to lose the race to a releaser that takes its lock straight back.
/// Measured with the hand-off benchmark's workers driven by hand, five
/// alternating runs each way: median acquisitions/s +14 % with two
/// processes, +3 % with four.
const SETTLE: std::time::Duration = std::time::Duration::from_micros(30);

/// Releases closer together than this make a loop: the watcher lets only
/// those settle. A lock that was held for longer was most likely let go for
/// good, and its waiter is woken at once (the hand-over to a sleeping waiter
/// is then about 0.1 ms quicker).
const LOOPING: std::time::Duration = std::time::Duration::from_millis(2);

/// A counter of events plus the wakers waiting for the next one.
#[derive(Debug, Default)]
pub(crate) struct Notify {
    generation: AtomicU64,
    wakers: Mutex<Vec<Waker>>,
}

impl Notify {
    fn wakers(&self) -> MutexGuard<'_, Vec<Waker>> {
        self.wakers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn notify(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let wakers = std::mem::take(&mut *self.wakers());
        wakers.into_iter().for_each(Waker::wake);
    }

    /// A future that completes at the first event after this call.
    pub(crate) fn listen(self: &Arc<Self>) -> ChangeListener {
        Box::pin(Listener {
            seen: self.generation.load(Ordering::SeqCst),
            notify: Arc::clone(self),
        })
    }
}

struct Listener {
    notify: Arc<Notify>,
    seen: u64,
}

impl Future for Listener {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let fired = || self.notify.generation.load(Ordering::SeqCst) != self.seen;
        if fired() {
            return Poll::Ready(());
        }
        {
            let mut wakers = self.notify.wakers();
            if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                wakers.push(cx.waker().clone());
            }
        }
        if fired() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// A watched directory: how to name it, and the lock names waited for.
#[derive(Debug)]
struct Dir {
    /// One of the paths it was watched by (any reaches the same directory).
    path: PathBuf,
    names: HashMap<OsString, Weak<Notify>>,
}

/// A watched holder process.
#[derive(Debug)]
struct Exit {
    pidfd: Arc<OwnedFd>,
    notify: Weak<Notify>,
}

#[derive(Debug, Default)]
struct State {
    /// By inotify watch descriptor: the kernel gives one directory one
    /// watch, however many paths lead to it (`d` and `/abs/d`, a symbolic
    /// link, a bind mount), so its waiters are one set.
    dirs: HashMap<i32, Dir>,
    /// The watch of each directory path asked for.
    paths: HashMap<PathBuf, i32>,
    exits: HashMap<(u32, u64), Exit>,
    /// When the watcher last saw a watched lock go away.
    last_removal: Option<std::time::Instant>,
}

impl State {
    /// The live registration of the exit of `pid`, started at `start`.
    fn exit_watch(&self, pid: u32, start: u64) -> Option<Arc<Notify>> {
        self.exits
            .get(&(pid, start))
            .and_then(|exit| exit.notify.upgrade())
    }

    fn forget_dir(&mut self, watch: i32) -> Option<Dir> {
        self.paths.retain(|_, known| *known != watch);
        self.dirs.remove(&watch)
    }
}

#[derive(Debug)]
struct Watcher {
    /// The process that made the watcher. A child forked without `exec`
    /// inherits this memory and the descriptors below, but not the thread:
    /// it must not use them (a watch it removed would be its parent's).
    pid: u32,
    inotify: OwnedFd,
    /// Written to when the set of pidfds changes, to restart the poll.
    wake_write: OwnedFd,
    wake_read: OwnedFd,
    state: Mutex<State>,
}

impl Watcher {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn poke(&self) {
        let _ = rustix::io::write(&self.wake_write, &[1]);
    }

    /// The watcher thread's loop: never returns while the process lives.
    fn run(&self) {
        let mut buffer = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
        loop {
            let pidfds: Vec<((u32, u64), Arc<OwnedFd>)> = {
                let mut state = self.state();
                state.exits.retain(|_, exit| exit.notify.strong_count() > 0);
                state
                    .exits
                    .iter()
                    .map(|(key, exit)| (*key, Arc::clone(&exit.pidfd)))
                    .collect()
            };
            let mut fds = vec![
                PollFd::new(&self.wake_read, PollFlags::IN),
                PollFd::new(&self.inotify, PollFlags::IN),
            ];
            fds.extend(
                pidfds
                    .iter()
                    .map(|(_, fd)| PollFd::new(fd.as_ref(), PollFlags::IN)),
            );
            match rustix::event::poll(&mut fds, None) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(error) => {
                    // Not expected (EINVAL: more descriptors than the limit;
                    // ENOMEM). Never spin on it: waiters still have their poll
                    // interval, and the next round may succeed.
                    tracing::warn!(%error, "the lock watcher cannot poll; retrying in 100 ms");
                    drop(fds);
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    continue;
                }
            }
            let ready: Vec<bool> = fds.iter().map(|fd| !fd.revents().is_empty()).collect();
            drop(fds);
            if ready[0] {
                let mut sink = [0u8; 64];
                while matches!(rustix::io::read(&self.wake_read, &mut sink), Ok(n) if n > 0) {}
            }
            if ready[1] {
                self.read_inotify(&mut buffer);
            }
            let exited: Vec<(u32, u64)> = pidfds
                .iter()
                .zip(&ready[2..])
                .filter(|(_, ready)| **ready)
                .map(|((key, _), _)| *key)
                .collect();
            if !exited.is_empty() {
                let notifies: Vec<Arc<Notify>> = {
                    let mut state = self.state();
                    exited
                        .iter()
                        .filter_map(|key| state.exits.remove(key))
                        .filter_map(|exit| exit.notify.upgrade())
                        .collect()
                };
                notifies.iter().for_each(|n| n.notify());
            }
        }
    }

    fn read_inotify(&self, buffer: &mut [std::mem::MaybeUninit<u8>]) {
        // Waiters to wake whatever the lock path holds now.
        let mut fired: Vec<Arc<Notify>> = Vec::new();
        // Waiters of a lock that was removed: woken only if it is still gone.
        let mut removed: Vec<(Arc<Notify>, PathBuf)> = Vec::new();
        let mut reader = inotify::Reader::new(&self.inotify, buffer);
        // Until EAGAIN: the queue is drained.
        while let Ok(event) = reader.next() {
            let mut state = self.state();
            let flags = event.events();
            if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
                // Events were lost: wake everyone, they look again.
                for dir in state.dirs.values() {
                    fired.extend(dir.names.values().filter_map(Weak::upgrade));
                }
                continue;
            }
            let wd = event.wd();
            if flags.contains(ReadFlags::IGNORED) {
                // The directory went away: its waiters must look again.
                if let Some(dir) = state.forget_dir(wd) {
                    fired.extend(dir.names.values().filter_map(Weak::upgrade));
                }
                continue;
            }
            let Some(dir) = state.dirs.get(&wd) else {
                continue;
            };
            if let Some(name) = event.file_name() {
                let name = std::ffi::OsStr::from_bytes(name.to_bytes());
                if let Some(notify) = dir.names.get(name).and_then(Weak::upgrade)
                    && !removed.iter().any(|(seen, _)| Arc::ptr_eq(seen, &notify))
                {
                    removed.push((notify, dir.path.join(name)));
                }
            }
        }
        // A waiter woken while the lock path is taken again (most often by
        // the process that just released it) can only fail to create it,
        // look at the winner and sleep again. Wake them only if the path is
        // still free now. Nothing is lost by skipping: the events above were
        // read before this look, so whatever is there now was created after
        // them, and its own removal will be a new event.
        if !removed.is_empty() {
            let now = std::time::Instant::now();
            let last = self.state().last_removal.replace(now);
            if looping(last, now) && STARVING.load(Ordering::Relaxed) == 0 {
                // The event comes the moment the lock is renamed away, while
                // its releaser is still cleaning up: the look tells more once
                // a releaser that takes its lock straight back has done so.
                std::thread::sleep(SETTLE);
            }
        }
        removed.retain(|(_, path)| rustix::fs::lstat(path).is_err());
        fired.extend(removed.into_iter().map(|(notify, _)| notify));
        fired.iter().for_each(|n| n.notify());
        self.unwatch_idle_dirs();
    }

    /// Stops watching directories nobody waits in any more, so that a
    /// process's own uncontended releases stop waking this thread.
    fn unwatch_idle_dirs(&self) {
        let mut state = self.state();
        let idle: Vec<i32> = state
            .dirs
            .iter_mut()
            .filter_map(|(watch, dir)| {
                dir.names.retain(|_, notify| notify.strong_count() > 0);
                dir.names.is_empty().then_some(*watch)
            })
            .collect();
        for watch in idle {
            state.forget_dir(watch);
            let _ = inotify::remove_watch(&self.inotify, watch);
        }
    }
}

/// How many waiter queues this process's leaders have marked starving
/// (bounded waiting): while one is, the releaser of its lock yields instead
/// of taking it straight back, so a release is worth waking for at once.
static STARVING: AtomicUsize = AtomicUsize::new(0);

/// Counts a starving mark made (`true`) or removed (`false`) by this
/// process; see [`STARVING`].
pub(crate) fn starving(made: bool) {
    if made {
        STARVING.fetch_add(1, Ordering::Relaxed);
    } else {
        STARVING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether this process can watch for releases at all (inotify and the
/// watcher thread are there); a particular directory may still fail.
pub(crate) fn available() -> bool {
    watcher().is_some()
}

/// Whether a removal seen at `now`, after one at `last`, is part of a loop
/// of releases (see [`LOOPING`]).
fn looping(last: Option<std::time::Instant>, now: std::time::Instant) -> bool {
    last.is_some_and(|last| now.saturating_duration_since(last) < LOOPING)
}

/// The process's watcher, started on first use; `None` when inotify or the
/// thread are not available, or in a child forked from the process that
/// started it (its waiters back off and poll instead).
fn watcher() -> Option<&'static Watcher> {
    watcher_of(std::process::id())
}

/// The watcher, as seen by the process `pid`.
fn watcher_of(pid: u32) -> Option<&'static Watcher> {
    static WATCHER: OnceLock<Option<Watcher>> = OnceLock::new();
    WATCHER
        .get_or_init(|| {
            let flags = inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK;
            let inotify = inotify::init(flags).ok()?;
            let pipe_flags = rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK;
            let (wake_read, wake_write) = rustix::pipe::pipe_with(pipe_flags).ok()?;
            Some(Watcher {
                pid,
                inotify,
                wake_write,
                wake_read,
                state: Mutex::new(State::default()),
            })
        })
        .as_ref()
        .filter(|watcher| watcher.pid == pid && start_thread(watcher))
}

fn start_thread(watcher: &'static Watcher) -> bool {
    static STARTED: OnceLock<bool> = OnceLock::new();
    *STARTED.get_or_init(|| {
        std::thread::Builder::new()
            .name("heldlock-watch".into())
            .spawn(move || watcher.run())
            .is_ok()
    })
}

/// A listener that completes when the lock file at `path` is removed or
/// renamed away after this call; `None` when that cannot be watched.
pub(crate) fn lock_removed(path: &Path) -> Option<ChangeListener> {
    let watcher = watcher()?;
    let name = path.file_name()?.to_os_string();
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut state = watcher.state();
    let watch = match state.paths.get(&dir) {
        Some(watch) => *watch,
        None => {
            // Only renames: release and break both rename the lock away,
            // while every release also unlinks its trash, and a deletion
            // event for that would wake every waiting process a second time
            // per release. A lock deleted in place (by hand) is noticed at
            // the next poll.
            let flags = WatchFlags::MOVED_FROM | WatchFlags::ONLYDIR;
            let watch = inotify::add_watch(&watcher.inotify, &dir, flags).ok()?;
            state.paths.insert(dir.clone(), watch);
            watch
        }
    };
    let entry = state.dirs.entry(watch).or_insert_with(|| Dir {
        path: dir,
        names: HashMap::new(),
    });
    entry.names.retain(|_, notify| notify.strong_count() > 0);
    let notify = match entry.names.get(&name).and_then(Weak::upgrade) {
        Some(notify) => notify,
        None => {
            let notify = Arc::new(Notify::default());
            entry.names.insert(name, Arc::downgrade(&notify));
            notify
        }
    };
    drop(state);
    Some(notify.listen())
}

/// Whether the exit of `pid` (started at `start`) is being watched and has
/// not happened: then it is alive, and nobody needs to read `/proc`.
pub(crate) fn watched_alive(pid: u32, start: u64) -> bool {
    watcher().is_some_and(|watcher| {
        watcher
            .state()
            .exit_watch(pid, start)
            .is_some_and(|notify| notify.generation.load(Ordering::SeqCst) == 0)
    })
}

/// A listener that completes when the process `pid`, started at `start`
/// (clock ticks since boot), exits; `None` when it cannot be watched.
pub(crate) fn process_exit(pid: u32, start: u64) -> Option<ChangeListener> {
    let watcher = watcher()?;
    if let Some(notify) = watcher.state().exit_watch(pid, start) {
        return Some(notify.listen());
    }
    // Opened and checked without the watcher's mutex, which its thread needs
    // for every event: `/proc` is read here for every new holder.
    let raw = rustix::process::Pid::from_raw(i32::try_from(pid).ok()?)?;
    let pidfd = rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty()).ok()?;
    // The pid may have been reused between the record and the open: only a
    // pidfd of the process started at `start` watches the holder. One that
    // is dead already (a zombie, a reused pid) fires at once: registered, it
    // would count as alive until the watcher thread polled its pidfd, and
    // its waiter would wake, look and register again in a loop. One that
    // `/proc` cannot tell about (hidden by `hidepid`) is not watched at all:
    // a listener that fired would wake its waiter again and again.
    match crate::host::liveness(pid, start) {
        Liveness::Alive => {}
        Liveness::Dead => return Some(Box::pin(std::future::ready(()))),
        Liveness::Unknown => return None,
    }
    let mut state = watcher.state();
    // Another waiter of this process may have registered it meanwhile.
    if let Some(notify) = state.exit_watch(pid, start) {
        return Some(notify.listen());
    }
    let notify = Arc::new(Notify::default());
    state.exits.insert(
        (pid, start),
        Exit {
            pidfd: Arc::new(pidfd),
            notify: Arc::downgrade(&notify),
        },
    );
    drop(state);
    watcher.poke();
    // The registration lives as long as some listener holds `notify`.
    Some(notify.listen())
}

#[cfg(test)]
mod tests;
