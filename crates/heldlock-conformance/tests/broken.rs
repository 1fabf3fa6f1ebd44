//! The suite can fail: deliberately broken backends (and a broken factory)
//! make `run_all` report exactly the checks that catch each fault.
#![allow(clippy::unwrap_used)]

mod faulty;

use futures::executor::block_on;
use heldlock_conformance::{
    BackendFactory, Capabilities, Failure, Outcome, Report, Resource, SharedClones, run_all,
};
use heldlock_core::{BackendError, MemoryBackend};

use faulty::{FAULTS, Fault, run};

fn assert_fails(fault: Fault, expected: &[&str]) -> Report {
    let report = run(Some(fault));
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
    let report = run(Some(Fault::DropsFields));
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
            "listen",
            "cancel_create",
            "cancel_release",
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
            "listen",
            "cancel_release",
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
            "listen",
        ],
    );
}

#[test]
fn a_break_of_nothing_that_says_broken_is_caught() {
    assert_fails(Fault::BreakOfNothingSaysBroken, &["break_absent"]);
}

#[test]
fn the_fault_free_faulty_backend_passes() {
    // The failures above come from the faults, not from the wrapper.
    let report = run(None);
    assert!(report.passed(), "{report}");
    assert!(
        report.outcomes().all(|(_, o)| matches!(o, Outcome::Passed)),
        "{report}"
    );
}

#[test]
fn a_listener_that_never_fires_is_caught() {
    let report = assert_fails(Fault::ListenNeverFires, &["listen"]);
    let message = report.failures().next().unwrap().to_string();
    assert!(
        message.contains("taken before A's release and first polled after it"),
        "{message}"
    );
    assert!(message.contains("still pending after 100ms"), "{message}");
}

#[test]
fn a_listener_that_subscribes_late_is_caught() {
    let report = assert_fails(Fault::ListenSubscribesLate, &["listen"]);
    let message = report.failures().next().unwrap().to_string();
    assert!(message.contains("first polled after it"), "{message}");
}

#[test]
fn a_break_that_wakes_no_listener_is_caught() {
    let report = assert_fails(Fault::ListenMissesBreak, &["listen"]);
    let message = report.failures().next().unwrap().to_string();
    assert!(
        message.contains("B's listener, taken before C's break"),
        "{message}"
    );
}

#[test]
fn a_create_that_is_not_cancel_safe_is_caught() {
    let report = assert_fails(Fault::CreateNotCancelSafe, &["cancel_create"]);
    let message = report.failures().next().unwrap().to_string();
    assert!(
        message.contains("after A's try_create was dropped after 1 polls"),
        "{message}"
    );
    assert!(message.contains("being created"), "{message}");
}

#[test]
fn a_release_that_is_not_cancel_safe_is_caught() {
    let report = assert_fails(Fault::ReleaseNotCancelSafe, &["cancel_release"]);
    let message = report.failures().next().unwrap().to_string();
    assert!(
        message.contains("after A's release was dropped after 1 polls"),
        "{message}"
    );
    assert!(message.contains("being released"), "{message}");
}

/// Every check of the suite catches at least one of the faults above: a
/// check that no broken backend fails could not fail at all.
#[test]
fn every_check_catches_some_fault() {
    let mut caught = std::collections::BTreeSet::new();
    for fault in FAULTS {
        caught.extend(run(Some(fault)).failed_checks());
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
    // Everything claimed, so that no check is skipped: every one fails.
    let claimed = Capabilities::new()
        .with_release_blocking(true)
        .with_listen(true);
    let report = block_on(run_all(&factory, claimed));
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
