//! The guard of a held lock, and the view a best-effort task gets.

use super::*;

/// A lock we hold. Its heartbeat keeps it fresh until it is released.
///
/// Call [`release`](Self::release) to release it and learn the outcome;
/// dropping it releases too, synchronously and best effort (the file-system
/// backend releases exactly as `release` does; a backend that cannot release
/// without awaiting leaves the lock to go stale, which is safe because the
/// heartbeat stops with the guard). A task that panics while holding the
/// guard therefore still releases.
///
/// Ownership can be lost while held: a pause longer than `stale` lets a peer
/// break the lock. Call [`refresh`](Self::refresh) right before a destructive
/// write, and watch [`lost`](Self::lost) in long critical sections.
#[must_use = "the lock is released as soon as the guard is dropped"]
#[clippy::has_significant_drop]
pub struct HeldLock {
    lease: Arc<Lease>,
    /// This process's turn on the resource, when waiters queue in process;
    /// dropped (passing the turn on) right after the lock is released.
    _local_turn: Option<KeyGuard<String>>,
}

impl HeldLock {
    /// The guard of a lease whose [`run`](Lease::run) task created the
    /// lock; that task goes on as the heartbeat, handed to the runtime when
    /// its first beat is due.
    pub(crate) fn start(
        lease: Arc<Lease>,
        run: Pin<Box<dyn Future<Output = ()> + Send + 'static>>,
        local_turn: Option<KeyGuard<String>>,
    ) -> Self {
        // The guard first: should arming the heartbeat panic (a runtime
        // whose timers are off, or that is not running here), the unwinding
        // drops the guard, which releases the lock just created.
        let held = HeldLock {
            lease,
            _local_turn: local_turn,
        };
        held.lease.start_heartbeat(run);
        held
    }

    /// Re-asserts ownership now: checks that the lock is still ours, re-stamps
    /// it, and checks again. `Ok(true)` while ours; `Ok(false)` once it was
    /// broken or replaced (and then [`lost`](Self::lost) resolves too), and
    /// when the backend has not answered by the lease's expiry (then nothing
    /// it says could keep peers from breaking the lock).
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the backend could not check (ownership is then
    /// unknown: do not write).
    ///
    /// # Cancel safety
    ///
    /// Dropping this future at any point changes nothing: the lock stays
    /// held and its heartbeat goes on (the backend's check-stamp-check on our
    /// own lock either re-stamped it or did not), and a refresh that did not
    /// finish reports no loss. Only a finished `Ok(true)` says the lock is
    /// ours.
    pub async fn refresh(&self) -> Result<bool, Error> {
        self.lease.refresh().await
    }

    /// Resolves once ownership is lost: the heartbeat or a refresh found the
    /// lock gone or replaced, or the lease expired (no refresh succeeded for
    /// `stale`, so peers may break the lock from then on). The expiry is
    /// watched by a timer of this future's own, so it resolves on time even
    /// while the heartbeat waits for a backend call that hangs. Never
    /// resolves while the lock is ours.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + '_ {
        self.lease.wait_lost()
    }

    /// Whether ownership is known to be lost. It reads no clock: an expiry
    /// shows here once the heartbeat, a refresh or a pending
    /// [`lost`](Self::lost) noticed it.
    pub fn is_lost(&self) -> bool {
        self.lease.lost.is_set()
    }

    /// The record we wrote into the lock.
    pub fn record(&self) -> &LockRecord {
        &self.lease.record
    }

    /// The fencing token of this grant: strictly greater than that of every
    /// earlier grant of the same lock, on a backend that can give one
    /// (`heldlock-etcd`: the key's create revision); `None` on the file
    /// backend, which has no token it could guarantee (`docs/safety.md`,
    /// "Fencing tokens").
    ///
    /// Hand it to the resource the lock protects with every write; the
    /// resource refuses a write whose token is lower than the highest it
    /// has seen, which stops a holder that was paused past its lease.
    pub fn fencing_token(&self) -> Option<u64> {
        self.lease.token.get().copied()
    }

    /// Our owner id.
    pub fn owner(&self) -> &OwnerId {
        &self.lease.record.owner
    }

    /// Stops the heartbeat and removes the lock if it is still ours.
    ///
    /// `Released::NotOurs` or `Released::Absent` mean ownership had been lost
    /// (a warning is reported too); the other lock is left untouched.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the backend failed; the heartbeat has stopped,
    /// so the lock goes stale and peers break it after `stale`.
    ///
    /// # Cancel safety
    ///
    /// Dropped before its first poll, the future drops the guard it owns,
    /// which releases as a drop does (synchronously, best effort). From its
    /// first poll on, the heartbeat has stopped; dropped while the backend's
    /// release has not answered, the lock is released or left in place,
    /// never anything in between (a backend step dropped half-way is either
    /// not done or done: [`LockBackend`](crate::LockBackend), "Cancel
    /// safety"), and nothing tries again: a lock left in place goes stale
    /// and peers break it after `stale`. Dropped after the backend answered
    /// (it yields once more, to let the heartbeat's task end), the lock is
    /// released.
    pub async fn release(self) -> Result<Released, Error> {
        let span = self.lease.release_span();
        self.lease.release().instrument(span).await
    }

    /// A view of this lease for a task (what [`LockState`] offers).
    pub(crate) fn state(&self) -> LockState {
        LockState {
            lease: Some(Arc::clone(&self.lease)),
        }
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        self.lease.release_in_drop();
    }
}

impl fmt::Debug for HeldLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeldLock")
            .field("resource", &self.lease.backend.resource())
            .field("owner", &self.lease.record.owner)
            .field("lost", &self.is_lost())
            .finish()
    }
}

/// What a task run by `with_lock` knows about the lock: whether it was
/// acquired, and (if so) how to re-assert it.
#[derive(Clone)]
pub struct LockState {
    lease: Option<Arc<Lease>>,
}

impl LockState {
    pub(crate) fn unlocked() -> Self {
        LockState { lease: None }
    }

    /// Whether the task runs under the lock (`false`: best effort, unlocked).
    pub fn acquired(&self) -> bool {
        self.lease.is_some()
    }

    /// As [`HeldLock::fencing_token`]; `None` when the lock was never
    /// acquired.
    pub fn fencing_token(&self) -> Option<u64> {
        self.lease
            .as_ref()
            .and_then(|lease| lease.token.get().copied())
    }

    /// As [`HeldLock::refresh`]; `Ok(false)` when the lock was never acquired.
    ///
    /// # Errors
    ///
    /// As [`HeldLock::refresh`].
    pub async fn refresh(&self) -> Result<bool, Error> {
        match &self.lease {
            Some(lease) => lease.refresh().await,
            None => Ok(false),
        }
    }

    /// Whether ownership is known to be lost (always `true` when unlocked).
    pub fn is_lost(&self) -> bool {
        self.lease.as_ref().is_none_or(|lease| lease.lost.is_set())
    }

    /// As [`HeldLock::lost`]; at once when the lock was never acquired.
    pub async fn lost(&self) {
        if let Some(lease) = &self.lease {
            lease.wait_lost().await;
        }
    }
}

impl fmt::Debug for LockState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockState")
            .field("acquired", &self.acquired())
            .field("lost", &self.is_lost())
            .finish()
    }
}
