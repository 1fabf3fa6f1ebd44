//! What stands in for the watcher off Linux: nothing to watch with.
//!
//! The watcher needs inotify (a release renames the lock away) and pidfds
//! (a holder's exit), and the queue of same-host waiters exists only to
//! take turns watching. Without them every waiter polls: exponential
//! backoff from 1 ms to `poll`, as when inotify is out of watches on Linux.

/// The queue of same-host waiters (Linux: `queue/`).
pub(crate) mod queue {
    use heldlock_core::ChangeListener;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    /// Never a listener: the waiter polls.
    pub(crate) fn listen(_path: &Path, _bound: Option<Duration>) -> Option<ChangeListener> {
        None
    }

    /// No queue, so no starving mark: bounded waiting takes no part.
    pub(crate) fn starving_mark(_path: &Path) -> Option<PathBuf> {
        None
    }

    /// Never asked (there is no mark); nobody to wait behind.
    pub(crate) fn wait_behind_older(
        _path: &Path,
        _mark: &Path,
        _bound: Duration,
    ) -> Option<ChangeListener> {
        None
    }
}

/// The watcher (Linux: `watch.rs`).
pub(crate) mod watch {
    use heldlock_core::ChangeListener;

    /// No exit is watched, so none is known to be alive.
    pub(crate) fn watched_alive(_pid: u32, _start: u64) -> bool {
        false
    }

    /// Never a listener: no holder's exit is watched.
    pub(crate) fn process_exit(_pid: u32, _start: u64) -> Option<ChangeListener> {
        None
    }
}
