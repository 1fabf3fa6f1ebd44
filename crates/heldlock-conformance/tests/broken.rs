//! The suite can fail: deliberately broken backends (and a broken factory)
//! make `run_all` report exactly the checks that catch each fault.
#![allow(clippy::unwrap_used)]

use std::time::SystemTime;

use async_trait::async_trait;
use futures::executor::block_on;
use heldlock_conformance::{
    BackendFactory, Capabilities, Failure, Outcome, Report, Resource, SharedClones, run_all,
};
use heldlock_core::{
    BackendError, Broke, Created, Holder, Identity, Inspection, LockBackend, LockRecord,
    MemoryBackend, Observed, OwnerId, Refreshed, Released,
};

/// One way to get the contract wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// `release` and `release_blocking` remove whatever lock is there.
    ReleaseIgnoresOwner,
    /// `break_if_unchanged` removes whatever lock is there.
    BreakIgnoresObservation,
    /// `refresh` re-stamps whatever lock is there.
    RefreshIgnoresOwner,
    /// `refresh` says `Refreshed` but does not move the stamp.
    RefreshKeepsStamp,
    /// `try_create` overwrites an existing lock.
    CreateOverwrites,
    /// Identities name the content, not the instance (a copied record with
    /// the same stamp looks like the same lock).
    IdentityByContent,
    /// The record read back loses its `key=value` fields.
    DropsFields,
    /// `inspect` reports a lock where there is none.
    InspectInventsALock,
    /// `release` by the owner says `Released` but leaves the lock in place.
    ReleaseKeepsTheLock,
    /// `refresh` of a released lock says `Refreshed`.
    RefreshRevivesAReleasedLock,
    /// `break_if_unchanged` never breaks, even the very lock observed.
    BreakNeverBreaks,
    /// `break_if_unchanged` with no lock there says `Broken`.
    BreakOfNothingSaysBroken,
}

/// Every fault, for the test that every check catches one.
const FAULTS: [Fault; 12] = [
    Fault::ReleaseIgnoresOwner,
    Fault::BreakIgnoresObservation,
    Fault::RefreshIgnoresOwner,
    Fault::RefreshKeepsStamp,
    Fault::CreateOverwrites,
    Fault::IdentityByContent,
    Fault::DropsFields,
    Fault::InspectInventsALock,
    Fault::ReleaseKeepsTheLock,
    Fault::RefreshRevivesAReleasedLock,
    Fault::BreakNeverBreaks,
    Fault::BreakOfNothingSaysBroken,
];

/// `MemoryBackend` with one fault.
#[derive(Clone, Debug)]
struct Faulty {
    inner: MemoryBackend,
    fault: Fault,
}

impl Faulty {
    /// Removes any lock: `Released` where the real backend says `NotOurs`.
    fn release_any(&self, owner: &OwnerId) -> Result<Released, BackendError> {
        match self.inner.release_blocking(owner) {
            Some(Ok(Released::NotOurs)) => {
                self.inner.remove();
                Ok(Released::Released)
            }
            Some(other) => other,
            None => unreachable!("MemoryBackend releases without awaiting"),
        }
    }

    async fn present(&self) -> Result<Option<Observed>, BackendError> {
        Ok(match self.inner.inspect().await? {
            Inspection::Present(observed) => Some(observed),
            Inspection::Absent => None,
        })
    }

    fn distort(&self, mut observed: Observed) -> Observed {
        match self.fault {
            Fault::IdentityByContent => observed.identity = Identity::new(b"content".to_vec()),
            Fault::DropsFields => {
                if let Holder::Record(record) = &mut observed.holder {
                    record.fields.clear();
                }
            }
            _ => {}
        }
        observed
    }
}

#[async_trait]
impl LockBackend for Faulty {
    fn resource(&self) -> String {
        self.inner.resource()
    }

    async fn try_create(&self, record: &LockRecord) -> Result<Created, BackendError> {
        if self.fault == Fault::CreateOverwrites {
            self.inner.remove();
        }
        self.inner.try_create(record).await
    }

    async fn inspect(&self) -> Result<Inspection, BackendError> {
        Ok(match self.inner.inspect().await? {
            Inspection::Present(observed) => Inspection::Present(self.distort(observed)),
            Inspection::Absent if self.fault == Fault::InspectInventsALock => {
                Inspection::Present(Observed::new(
                    Holder::Foreign {
                        summary: "invented".into(),
                    },
                    Identity::new(b"invented".to_vec()),
                    SystemTime::UNIX_EPOCH,
                ))
            }
            Inspection::Absent => Inspection::Absent,
        })
    }

    async fn refresh(&self, owner: &OwnerId, now: SystemTime) -> Result<Refreshed, BackendError> {
        match self.fault {
            Fault::RefreshIgnoresOwner if self.present().await?.is_some() => {
                self.inner.set_refreshed_at(now);
                Ok(Refreshed::Refreshed)
            }
            Fault::RefreshKeepsStamp => {
                let ours = self
                    .present()
                    .await?
                    .is_some_and(|o| o.holder.record().is_some_and(|r| &r.owner == owner));
                Ok(if ours {
                    Refreshed::Refreshed
                } else {
                    Refreshed::Lost
                })
            }
            Fault::RefreshRevivesAReleasedLock if self.present().await?.is_none() => {
                Ok(Refreshed::Refreshed)
            }
            _ => self.inner.refresh(owner, now).await,
        }
    }

    async fn break_if_unchanged(&self, observed: &Observed) -> Result<Broke, BackendError> {
        let Some(current) = self.present().await? else {
            return Ok(if self.fault == Fault::BreakOfNothingSaysBroken {
                Broke::Broken
            } else {
                Broke::Absent
            });
        };
        match self.fault {
            Fault::BreakNeverBreaks => Ok(Broke::Changed),
            Fault::BreakIgnoresObservation => {
                self.inner.remove();
                Ok(Broke::Broken)
            }
            // Compare as the faulty identity sees it, then break what is there.
            Fault::IdentityByContent | Fault::DropsFields => {
                if self.distort(current.clone()) == *observed {
                    self.inner.break_if_unchanged(&current).await
                } else {
                    Ok(Broke::Changed)
                }
            }
            _ => self.inner.break_if_unchanged(observed).await,
        }
    }

    async fn release(&self, owner: &OwnerId) -> Result<Released, BackendError> {
        match self.fault {
            Fault::ReleaseIgnoresOwner => self.release_any(owner),
            Fault::ReleaseKeepsTheLock => Ok(Released::Released),
            _ => self.inner.release(owner).await,
        }
    }

    fn release_blocking(&self, owner: &OwnerId) -> Option<Result<Released, BackendError>> {
        match self.fault {
            Fault::ReleaseIgnoresOwner => Some(self.release_any(owner)),
            Fault::ReleaseKeepsTheLock => Some(Ok(Released::Released)),
            _ => self.inner.release_blocking(owner),
        }
    }
}

fn run(fault: Fault) -> Report {
    let factory = move || -> Result<Box<dyn Resource>, BackendError> {
        Ok(Box::new(SharedClones(Faulty {
            inner: MemoryBackend::new(format!("{fault:?}")),
            fault,
        })))
    };
    block_on(run_all(
        &factory,
        Capabilities::new().with_release_blocking(true),
    ))
}

fn assert_fails(fault: Fault, expected: &[&str]) -> Report {
    let report = run(fault);
    assert!(!report.passed(), "{fault:?} passed:\n{report}");
    assert_eq!(report.failed_checks(), expected, "{fault:?}:\n{report}");
    report
}

#[test]
fn release_ignoring_ownership_is_caught() {
    let report = assert_fails(
        Fault::ReleaseIgnoresOwner,
        &[
            "release_by_stranger",
            "release_after_replacement",
            "release_blocking",
            "copied_record_not_ours",
        ],
    );
    let message = report.failures().next().unwrap().to_string();
    assert!(
        message.starts_with("check `release_by_stranger` failed"),
        "{message}"
    );
    assert!(
        message.contains("expected NotOurs; found Released"),
        "{message}"
    );
}

#[test]
fn break_ignoring_the_observation_is_caught() {
    assert_fails(
        Fault::BreakIgnoresObservation,
        &[
            "break_after_refresh",
            "break_replaced",
            "identity_per_instance",
        ],
    );
}

#[test]
fn refresh_ignoring_ownership_is_caught() {
    assert_fails(
        Fault::RefreshIgnoresOwner,
        &[
            "refresh_by_stranger",
            "refresh_after_replacement",
            "copied_record_not_ours",
        ],
    );
}

#[test]
fn refresh_that_keeps_the_stamp_is_caught() {
    let report = assert_fails(
        Fault::RefreshKeepsStamp,
        &[
            "refresh_by_owner",
            "break_after_refresh",
            "copied_record_not_ours",
        ],
    );
    let message = report.failures().next().unwrap().to_string();
    assert!(message.contains("refreshed t0+10s"), "{message}");
    assert!(message.contains("refreshed t0)"), "{message}");
}

#[test]
fn create_overwriting_is_caught() {
    assert_fails(Fault::CreateOverwrites, &["create_exists", "create_race"]);
}

#[test]
fn identity_by_content_is_caught() {
    assert_fails(Fault::IdentityByContent, &["identity_per_instance"]);
}

#[test]
fn dropped_fields_are_caught() {
    let report = run(Fault::DropsFields);
    // Every check that reads back a record it wrote fails; only the two that
    // never see a present lock pass.
    let passed: Vec<_> = report
        .outcomes()
        .filter(|(_, outcome)| matches!(outcome, Outcome::Passed))
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        passed,
        ["inspect_free", "refresh_after_release"],
        "{report}"
    );
    let first = report.failures().next().unwrap();
    assert!(matches!(
        first,
        Failure::Mismatch {
            check: "create_then_inspect",
            ..
        }
    ));
    assert!(
        first.to_string().ends_with("which differs in fields"),
        "{first}"
    );
}

#[test]
fn a_lock_invented_by_inspect_is_caught() {
    assert_fails(
        Fault::InspectInventsALock,
        &[
            "inspect_free",
            "release_by_owner",
            "refresh_after_release",
            "break_current",
            "break_absent",
            "release_blocking",
        ],
    );
}

#[test]
fn a_release_that_keeps_the_lock_is_caught() {
    assert_fails(
        Fault::ReleaseKeepsTheLock,
        &[
            "inspect_free",
            "release_by_stranger",
            "release_by_owner",
            "refresh_after_release",
            "break_current",
            "break_replaced",
            "break_absent",
            "release_after_replacement",
            "identity_per_instance",
            "release_blocking",
            "copied_record_not_ours",
        ],
    );
}

#[test]
fn a_refresh_that_revives_a_released_lock_is_caught() {
    assert_fails(
        Fault::RefreshRevivesAReleasedLock,
        &["inspect_free", "refresh_after_release", "break_current"],
    );
}

#[test]
fn a_break_that_never_breaks_is_caught() {
    assert_fails(
        Fault::BreakNeverBreaks,
        &[
            "break_current",
            "refresh_after_replacement",
            "release_after_replacement",
            "release_blocking",
            "copied_record_not_ours",
        ],
    );
}

#[test]
fn a_break_of_nothing_that_says_broken_is_caught() {
    assert_fails(Fault::BreakOfNothingSaysBroken, &["break_absent"]);
}

/// Every check of the suite catches at least one of the faults above: a
/// check that no broken backend fails could not fail at all.
#[test]
fn every_check_catches_some_fault() {
    let mut caught = std::collections::BTreeSet::new();
    for fault in FAULTS {
        caught.extend(run(fault).failed_checks());
    }
    let uncaught: Vec<&str> = heldlock_conformance::CHECKS
        .iter()
        .map(heldlock_conformance::Check::name)
        .filter(|name| !caught.contains(name))
        .collect();
    assert!(uncaught.is_empty(), "checks no fault fails: {uncaught:?}");
}

/// A factory that hands every check the same lock: not fresh.
struct Stale(MemoryBackend);

impl BackendFactory for Stale {
    fn fresh(&self) -> Result<Box<dyn Resource>, BackendError> {
        Ok(Box::new(SharedClones(self.0.clone())))
    }
}

#[test]
fn a_factory_that_is_not_fresh_is_caught() {
    let factory = Stale(MemoryBackend::new("shared"));
    let report = block_on(run_all(
        &factory,
        Capabilities::new().with_release_blocking(true),
    ));
    assert!(!report.passed(), "{report}");
    // The first check leaves nothing behind; the second leaves A's lock,
    // which the third finds.
    assert!(
        report.failed_checks().contains(&"create_exists"),
        "{report}"
    );
}

/// A factory that cannot set up a resource.
#[test]
fn factory_errors_name_the_check() {
    let factory = || -> Result<Box<dyn Resource>, BackendError> {
        Err(BackendError::Other {
            step: heldlock_core::Step::Prepare,
            resource: "nowhere".into(),
            source: "no space left".into(),
        })
    };
    let report = block_on(run_all(&factory, Capabilities::new()));
    assert_eq!(
        report.failed_checks().len(),
        heldlock_conformance::CHECKS.len()
    );
    let message = report.failures().next().unwrap().to_string();
    assert!(
        message.starts_with("check `inspect_free` failed"),
        "{message}"
    );
    assert!(message.contains("no space left"), "{message}");
}
