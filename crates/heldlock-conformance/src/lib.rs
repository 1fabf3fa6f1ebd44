//! The conformance suite every heldlock [`LockBackend`](heldlock_core::LockBackend)
//! runs: public async check functions and one [`run_all`], so that the author
//! of a custom backend runs exactly the checks that heldlock's own backends
//! run, and no backend can quietly skip one.
//!
//! The smallest working example, on the in-memory backend of `heldlock-core`:
//!
//! ```
//! use heldlock_conformance::{BackendFactory, Capabilities, Resource, SharedClones, run_all};
//! use heldlock_core::{BackendError, MemoryBackend};
//!
//! /// Each check gets its own lock; clones of one `MemoryBackend` share it.
//! struct Memory;
//!
//! impl BackendFactory for Memory {
//!     fn fresh(&self) -> Result<Box<dyn Resource>, BackendError> {
//!         Ok(Box::new(SharedClones(MemoryBackend::new("conformance"))))
//!     }
//! }
//!
//! let capabilities = Capabilities::new().with_release_blocking(true);
//! let report = futures::executor::block_on(run_all(&Memory, capabilities));
//! assert!(report.passed(), "{report}");
//! ```
//!
//! The suite needs no async runtime: run it inside whichever executor your
//! backend needs (`futures::executor::block_on`, `#[tokio::test]`,
//! `#[async_std::test]`).
//!
//! # Testing your backend in 3 steps
//!
//! 1. **Give each check a fresh lock.** Implement [`BackendFactory`]: its
//!    [`fresh`](BackendFactory::fresh) returns a new [`Resource`] that no lock
//!    holds and no other call shares (a new path in a temporary directory, a
//!    new key). The resource's [`open`](Resource::open) returns a new handle
//!    acting as *another process* on the same lock: a new backend value on the
//!    same path, never a clone that shares open descriptors. Closures
//!    implement both traits; [`SharedClones`] covers backends whose clones
//!    share one lock.
//! 2. **Declare what it can do.** Start from [`Capabilities::new`] and claim
//!    `release_blocking` if `release_blocking` returns `Some`, `listen` if
//!    `listen` returns `Some` (on the machine the tests run on), and a
//!    `stamp_tolerance` if your stamps are coarser than one second.
//! 3. **Run everything in a test**, in the runtime your backend needs:
//!    `let report = run_all(&factory, capabilities).await;` then
//!    `assert!(report.passed(), "{report}");`.
//!    The report names every check with its outcome, and each failure says
//!    which step went wrong, what was expected and what was found. To run
//!    the checks in parallel, run each entry of [`CHECKS`] from its own test
//!    with [`Check::run`]; a test that walks [`CHECKS`] keeps the list
//!    complete.
//!
//! # What is checked
//!
//! Each entry of [`CHECKS`] is one `check_*` function; their docs say what
//! they assert. Together they cover: a free resource; create and inspect
//! (the record as written, the stamp equal to `acquired_at`, a stable
//! identity); contention (`Exists`, and the holder untouched); refresh by the
//! owner and by strangers; release by the owner and by strangers; break with
//! a current, a pre-refresh, a replaced and an absent observation; refresh
//! and release after a replacement; a new identity per lock instance even
//! with identical content; a create race with exactly one winner;
//! `release_blocking`; ownership by instance; change notifications
//! (`listen`) after a release and after a break, for backends that claim
//! them; and cancel safety: a `try_create` or a `release` dropped at each of
//! its await points in turn leaves either nothing done or the step done, never
//! a lock that nobody owns.
//!
//! # Time
//!
//! No check sleeps. Each reads the wall clock once, truncates it to whole
//! seconds (`t0`) and writes only explicit stamps `t0 + n` ×
//! [`STAMP_STEP`] (as `LockRecord::acquired_at` and as the `now` of
//! `refresh`). Failure messages show stamps relative to `t0`. Only
//! [`check_listen`] waits in real time, for a notification, and at most
//! [`Capabilities::notify_within`]; it starts a short-lived thread to end
//! that wait, since the suite has no runtime timer.
#![warn(missing_docs)]

mod cancel;
mod capabilities;
mod checks;
mod factory;
mod harness;
mod listen;
mod report;

use std::fmt;
use std::future::Future;

pub use cancel::{MAX_CANCEL_POINTS, check_cancel_create, check_cancel_release};
pub use capabilities::{Capabilities, Capability, DEFAULT_NOTIFY_WITHIN, STAMP_STEP};
pub use checks::{
    RACERS, check_break_absent, check_break_after_refresh, check_break_current,
    check_break_replaced, check_copied_record_not_ours, check_create_exists, check_create_race,
    check_create_then_inspect, check_identity_per_instance, check_inspect_free,
    check_refresh_after_release, check_refresh_after_replacement, check_refresh_by_owner,
    check_refresh_by_stranger, check_release_after_replacement, check_release_blocking,
    check_release_by_owner, check_release_by_stranger,
};
pub use factory::{BackendFactory, Resource, SharedClones};
pub use listen::check_listen;
pub use report::{Failure, Outcome, Report};

use harness::BoxFuture;

/// The type of a check's entry point in [`CHECKS`].
type RunFn = for<'a> fn(&'a dyn BackendFactory, Capabilities) -> BoxFuture<'a, Result<(), Failure>>;

/// One check of the suite: its name, what it asserts, the capability it
/// needs (if any), and how to run it.
#[derive(Clone, Copy)]
pub struct Check {
    name: &'static str,
    summary: &'static str,
    needs: Option<Capability>,
    run: RunFn,
}

impl Check {
    /// The check's name, as used in failures and reports.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// One line saying what the check asserts.
    pub const fn summary(&self) -> &'static str {
        self.summary
    }

    /// The capability the check needs; without it the check is skipped.
    pub const fn needs(&self) -> Option<Capability> {
        self.needs
    }

    /// Runs the check on a fresh resource from `factory`, or reports it
    /// skipped when it needs a capability that `capabilities` does not claim.
    pub fn run<'a>(
        &self,
        factory: &'a dyn BackendFactory,
        capabilities: Capabilities,
    ) -> impl Future<Output = Outcome> + Send + 'a {
        let check = *self;
        async move {
            if let Some(needs) = check.needs.filter(|c| !capabilities.has(*c)) {
                return Outcome::Skipped { needs };
            }
            match (check.run)(factory, capabilities).await {
                Ok(()) => Outcome::Passed,
                Err(failure) => Outcome::Failed(failure),
            }
        }
    }
}

impl fmt::Debug for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Check")
            .field("name", &self.name)
            .field("needs", &self.needs)
            .finish_non_exhaustive()
    }
}

/// Builds a [`CHECKS`] entry; the closure boxes the check's future so that
/// every entry has one type.
macro_rules! check {
    ($name:literal, $function:ident, $needs:expr, $summary:literal) => {
        Check {
            name: $name,
            summary: $summary,
            needs: $needs,
            run: |factory, capabilities| Box::pin($function(factory, capabilities)),
        }
    };
}

/// Every check of the suite, in the order [`run_all`] runs them.
pub const CHECKS: &[Check] = &[
    check!(
        "inspect_free",
        check_inspect_free,
        None,
        "a free resource inspects Absent; a stranger's refresh is Lost and release Absent"
    ),
    check!(
        "create_then_inspect",
        check_create_then_inspect,
        None,
        "try_create on a free resource is Created; inspect shows the record written, stamped acquired_at, with a stable identity"
    ),
    check!(
        "create_exists",
        check_create_exists,
        None,
        "try_create while a lock exists is Exists, from a peer and from the holder's handle; the lock is untouched"
    ),
    check!(
        "refresh_by_owner",
        check_refresh_by_owner,
        None,
        "the owner's refresh is Refreshed and moves the stamp to `now`, record unchanged"
    ),
    check!(
        "refresh_by_stranger",
        check_refresh_by_stranger,
        None,
        "a stranger's refresh is Lost; the lock and its stamp are untouched"
    ),
    check!(
        "release_by_stranger",
        check_release_by_stranger,
        None,
        "a stranger's release is NotOurs; the lock is untouched"
    ),
    check!(
        "release_by_owner",
        check_release_by_owner,
        None,
        "the owner's release is Released, the lock is gone, a second release is Absent"
    ),
    check!(
        "refresh_after_release",
        check_refresh_after_release,
        None,
        "the owner's refresh after its release is Lost and creates nothing"
    ),
    check!(
        "break_current",
        check_break_current,
        None,
        "break with the current observation is Broken and the lock is gone; the old owner's refresh is Lost"
    ),
    check!(
        "break_after_refresh",
        check_break_after_refresh,
        None,
        "break with an observation from before a refresh is Changed; the lock is untouched"
    ),
    check!(
        "break_replaced",
        check_break_replaced,
        None,
        "break with an observation of a released lock's earlier instance is Changed; the replacement is untouched"
    ),
    check!(
        "break_absent",
        check_break_absent,
        None,
        "break after the observed lock was released is Absent and creates nothing"
    ),
    check!(
        "refresh_after_replacement",
        check_refresh_after_replacement,
        None,
        "after a peer broke and replaced the lock, the old owner's refresh is Lost; the replacement is untouched"
    ),
    check!(
        "release_after_replacement",
        check_release_after_replacement,
        None,
        "after a peer broke and replaced the lock, the old owner's release is NotOurs; the replacement is untouched"
    ),
    check!(
        "identity_per_instance",
        check_identity_per_instance,
        None,
        "a lock re-created with an identical record has a new identity; a break with the old observation is Changed"
    ),
    check!(
        "create_race",
        check_create_race,
        None,
        "of RACERS peers racing try_create on a free resource, exactly one is Created and holds the lock"
    ),
    check!(
        "release_blocking",
        check_release_blocking,
        None,
        "release_blocking behaves like release when claimed, and is None when not"
    ),
    check!(
        "copied_record_not_ours",
        check_copied_record_not_ours,
        None,
        "a lock a peer re-created with a copy of our record is not ours: refresh Lost, release NotOurs"
    ),
    check!(
        "listen",
        check_listen,
        Some(Capability::Listen),
        "a listener taken before a release or a break completes after it, even if first polled after it"
    ),
    check!(
        "cancel_create",
        check_cancel_create,
        None,
        "try_create dropped at each await point leaves no lock or the creator's, which it can release; nothing else"
    ),
    check!(
        "cancel_release",
        check_cancel_release,
        None,
        "release dropped at each await point leaves the owner's lock untouched (still refreshable) or removed"
    ),
];

/// The entry of [`CHECKS`] named `name`.
pub fn check(name: &str) -> Option<&'static Check> {
    CHECKS.iter().find(|c| c.name == name)
}

/// Runs every check of [`CHECKS`] on `factory`, one after another, and
/// reports each outcome.
///
/// Each check makes its own fresh resource, so a failure in one does not
/// disturb the others, and every check runs even after a failure.
pub async fn run_all(factory: &dyn BackendFactory, capabilities: Capabilities) -> Report {
    let mut outcomes = Vec::with_capacity(CHECKS.len());
    for check in CHECKS {
        outcomes.push((check.name, check.run(factory, capabilities).await));
    }
    Report { outcomes }
}
