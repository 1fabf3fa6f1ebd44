//! What a backend declares about itself before the suite runs.

use std::fmt;
use std::time::Duration;

/// The gap between two distinct stamps that the checks write (`acquired_at`,
/// then each refresh). A [`Capabilities::stamp_tolerance`] must stay below
/// half of it, or the checks could not tell one stamp from the next.
pub const STAMP_STEP: Duration = Duration::from_secs(10);

/// How long [`Capabilities::new`] lets a listener take to complete after the
/// change it must report (see [`Capabilities::notify_within`]).
pub const DEFAULT_NOTIFY_WITHIN: Duration = Duration::from_secs(10);

/// What a backend declares about its optional behaviours and its stamps.
///
/// Start from [`Capabilities::new`] (nothing optional, exact stamps) and
/// claim what the backend does. A claim never lets a backend skip a mandatory
/// check: a claimed behaviour is checked, and a claimed one that is missing
/// fails. `release_blocking` that is present but not claimed is reported
/// too (see [`check_release_blocking`](crate::check_release_blocking)); an
/// unclaimed `listen` skips [`check_listen`](crate::check_listen).
///
/// ```
/// use heldlock_conformance::Capabilities;
///
/// let capabilities = Capabilities::new().with_release_blocking(true);
/// assert!(capabilities.release_blocking);
/// assert!(!capabilities.listen);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// [`LockBackend::release_blocking`](heldlock_core::LockBackend::release_blocking)
    /// returns `Some`: the backend can release without awaiting.
    pub release_blocking: bool,
    /// How far a stamp the backend reports (`refreshed_at`, a record's
    /// `acquired_at`) may be from the one it was given.
    ///
    /// Zero by default. Every stamp the checks write is a whole number of
    /// seconds, so a backend keeping at least one-second precision stores it
    /// exactly and needs no tolerance; a coarser one (FAT's 2 s mtime) or one
    /// that stamps creation with its own clock declares it here. It must be
    /// below half of [`STAMP_STEP`]; otherwise every check fails with
    /// [`Failure::Misconfigured`](crate::Failure::Misconfigured). Comparisons of
    /// two observations of an unchanged lock are always exact, since
    /// `break_if_unchanged` relies on them.
    pub stamp_tolerance: Duration,
    /// [`LockBackend::listen`](heldlock_core::LockBackend::listen) returns
    /// `Some`: the backend notifies waiters when the lock may have become
    /// free. Claimed, it is checked by [`check_listen`](crate::check_listen);
    /// not claimed, that check is skipped.
    pub listen: bool,
    /// How long a listener may take to complete after the release or break
    /// it must report ([`DEFAULT_NOTIFY_WITHIN`] by default). Only
    /// [`check_listen`](crate::check_listen) waits, and only this long at
    /// most: a listener that completes sooner ends the wait at once.
    pub notify_within: Duration,
}

impl Default for Capabilities {
    /// The same as [`Capabilities::new`].
    fn default() -> Self {
        Self::new()
    }
}

impl Capabilities {
    /// No optional behaviour, exact stamps.
    pub const fn new() -> Self {
        Capabilities {
            release_blocking: false,
            stamp_tolerance: Duration::ZERO,
            listen: false,
            notify_within: DEFAULT_NOTIFY_WITHIN,
        }
    }

    /// Sets [`release_blocking`](Self::release_blocking).
    #[must_use]
    pub const fn with_release_blocking(mut self, yes: bool) -> Self {
        self.release_blocking = yes;
        self
    }

    /// Sets [`stamp_tolerance`](Self::stamp_tolerance).
    #[must_use]
    pub const fn with_stamp_tolerance(mut self, tolerance: Duration) -> Self {
        self.stamp_tolerance = tolerance;
        self
    }

    /// Sets [`listen`](Self::listen).
    #[must_use]
    pub const fn with_listen(mut self, yes: bool) -> Self {
        self.listen = yes;
        self
    }

    /// Sets [`notify_within`](Self::notify_within).
    #[must_use]
    pub const fn with_notify_within(mut self, limit: Duration) -> Self {
        self.notify_within = limit;
        self
    }

    /// Whether `capability` is claimed.
    pub const fn has(&self, capability: Capability) -> bool {
        match capability {
            Capability::ReleaseBlocking => self.release_blocking,
            Capability::Listen => self.listen,
        }
    }
}

/// One optional behaviour, as named in [`Capabilities`] and in skipped
/// outcomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Capability {
    /// [`Capabilities::release_blocking`].
    ReleaseBlocking,
    /// [`Capabilities::listen`].
    Listen,
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Capability::ReleaseBlocking => "release_blocking",
            Capability::Listen => "listen",
        })
    }
}
