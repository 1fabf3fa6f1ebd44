//! How a backend is set up: the sweep, break markers' expiry, kernel locks,
//! durable writes, and the settings `FileLock` gives them all.

use std::time::Duration;

use super::FsBackend;
use crate::vfs::Vfs;

impl<V: Vfs> FsBackend<V> {
    /// Sweeps this lock's abandoned trash: the `<name>.breaking.<id>` and
    /// `<name>.releasing.<id>` files that a process killed between its
    /// rename to trash and its unlink left behind, once their modification
    /// time is older than `age` (give the lock's `stale`: a process paused
    /// that long in the middle of a step is outside the lease model anyway).
    ///
    /// The sweep lists the lock's directory, so it never runs on the
    /// acquiring task: on the real file system it runs on a thread of its
    /// own, after a backend's first successful create at most once per lock
    /// and process per `age`, and after each successful break. Off by
    /// default; `FileLock` turns it on. Only regular files are removed,
    /// never followed links or directories.
    #[must_use]
    pub fn sweep_trash_older_than(mut self, age: Duration) -> Self {
        self.trash_max_age = Some(age);
        self
    }

    /// How long a break marker may stand before it counts as abandoned by a
    /// breaker that died mid-break, and is removed by the next one (default
    /// [`DEFAULT_MARKER_EXPIRY`](super::DEFAULT_MARKER_EXPIRY); `FileLock` gives its `stale` plus
    /// `max_clock_skew`). A marker expires when our wall clock says it is
    /// older than this (its modification time is set by the file system
    /// that holds it, so give the clock skew between hosts and that file
    /// system), or when this backend has seen it unchanged for this long on
    /// its monotonic clock, which no clock disagreement can fool.
    #[must_use]
    pub fn expire_break_markers_after(mut self, age: Duration) -> Self {
        self.marker_expiry = age;
        self
    }

    /// The settings [`FileLock`](crate::FileLock) gives the backend of a
    /// lock with `timing`: trash abandoned by a process killed mid-step is
    /// swept once older than `stale`
    /// ([`sweep_trash_older_than`](Self::sweep_trash_older_than)), and a
    /// break marker expires once older than the longest a lock of ours may
    /// look fresh to a peer, `stale + max_clock_skew`
    /// ([`expire_break_markers_after`](Self::expire_break_markers_after)),
    /// judged by the wall clock only where `timing.wall_clock_rule` trusts
    /// it ([`expire_break_markers_by_wall_clock`](Self::expire_break_markers_by_wall_clock)).
    /// The simulator builds its backends with it, so that it checks what
    /// `FileLock` ships.
    #[must_use]
    pub fn with_lock_timing(self, timing: &heldlock_core::Timing) -> Self {
        self.sweep_trash_older_than(timing.stale)
            .expire_break_markers_after(timing.stale.saturating_add(timing.max_clock_skew))
            .expire_break_markers_by_wall_clock(timing.wall_clock_rule)
            .bounded_wait(timing.bounded_wait)
    }

    /// Bounded waiting among this host's waiters (default `None`: off; see
    /// `LockOptions::bounded_wait`, which `FileLock` gives here). The
    /// waiter that leads the host's queue of waiters for this lock (see
    /// `docs/protocol.md`, "Waking waiters") and has led for longer than
    /// `bound` leaves an empty *starving mark* beside the queue's files, in
    /// this user's private queue directory, never beside the lock; an
    /// acquirer with bounded waiting on that finds the mark before its first
    /// try queues behind that leader instead of trying. The leader removes
    /// the mark as it leaves the queue (having got the lock, or given up),
    /// and so does whoever removes the queue's files. Only on the real file
    /// system, where waiters are notified.
    #[must_use]
    pub fn bounded_wait(mut self, bound: Option<Duration>) -> Self {
        self.bounded_wait = bound;
        self
    }

    /// Whether a break marker may count as expired when our wall clock says
    /// it is older than the expiry (default `true`). Turn it off where the
    /// hosts' clocks are not trusted (the wall-clock rule off): a clock
    /// ahead by more than the expiry would take a live breaker's marker for
    /// an abandoned one, and two breakers would act on one stale lock. A
    /// marker then expires only once this backend has seen it unchanged for
    /// the expiry on its monotonic clock.
    #[must_use]
    pub fn expire_break_markers_by_wall_clock(mut self, enabled: bool) -> Self {
        self.marker_wall_clock = enabled;
        self
    }

    /// Whether a holder takes an exclusive kernel lock (`flock`) on its lock
    /// file, and a waiter probes it as proof of life (default `true`; see
    /// `docs/protocol.md`, "Proof of life"). `FileLock` turns it off on a
    /// network file system: only the holder's own host could trust the
    /// proof, and there a `flock` goes through the server's lock manager,
    /// whose failures can block or keep a crashed client's lock for good.
    #[must_use]
    pub fn kernel_locks(mut self, enabled: bool) -> Self {
        self.kernel_locks = enabled;
        self
    }

    /// Whether `try_create` flushes the record to stable storage (`fsync`)
    /// before reporting the lock created. Off by default: a lock only
    /// matters while its holder runs, and a crash that loses the record
    /// leaves an empty file that goes stale like any other.
    #[must_use]
    pub fn sync_writes(mut self, sync: bool) -> Self {
        self.sync_writes = sync;
        self
    }
}
