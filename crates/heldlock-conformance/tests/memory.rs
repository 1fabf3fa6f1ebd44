//! The suite on the reference backend, `heldlock_core::MemoryBackend`, plus
//! the suite's own plumbing: names, capabilities, parallel runs.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use futures::executor::block_on;
use heldlock_conformance::{
    BackendFactory, CHECKS, Capabilities, Failure, Outcome, Resource, SharedClones, check,
    check_create_race, run_all,
};
use heldlock_core::{BackendError, LockBackend, MemoryBackend};

/// Each check gets its own lock; clones of one `MemoryBackend` share it.
struct Memory;

impl BackendFactory for Memory {
    fn fresh(&self) -> Result<Box<dyn Resource>, BackendError> {
        Ok(Box::new(SharedClones(MemoryBackend::new("conformance"))))
    }
}

/// What `MemoryBackend` can do: release without awaiting.
const MEMORY: Capabilities = Capabilities::new().with_release_blocking(true);

#[test]
fn memory_backend_passes_every_check() {
    let report = block_on(run_all(&Memory, MEMORY));
    assert!(report.passed(), "{report}");
    let names: Vec<_> = report.outcomes().map(|(name, _)| name).collect();
    let expected: Vec<_> = CHECKS.iter().map(|c| c.name()).collect();
    assert_eq!(names, expected, "run_all runs every check, in CHECKS order");
    for (name, outcome) in report.outcomes() {
        assert!(matches!(outcome, Outcome::Passed), "{name}: {outcome:?}");
    }
    assert!(
        report
            .to_string()
            .contains("18 passed, 0 failed, 0 skipped"),
        "{report}"
    );
}

#[test]
fn check_names_are_unique_and_match_their_functions() {
    // An impossible tolerance makes every check fail before it touches the
    // backend, with the name the check function itself uses: this catches a
    // `CHECKS` entry whose name and function disagree.
    let caps = Capabilities::new().with_stamp_tolerance(Duration::from_secs(5));
    let mut seen = std::collections::HashSet::new();
    for entry in CHECKS {
        assert!(seen.insert(entry.name()), "duplicate name {}", entry.name());
        assert!(!entry.summary().is_empty());
        assert_eq!(check(entry.name()).map(|c| c.name()), Some(entry.name()));
        match block_on(entry.run(&Memory, caps)) {
            Outcome::Failed(failure @ Failure::Misconfigured { .. }) => {
                assert_eq!(failure.check(), entry.name());
                assert!(failure.to_string().contains("stamp_tolerance"), "{failure}");
            }
            other => panic!("{}: expected Misconfigured, got {other:?}", entry.name()),
        }
    }
    assert!(check("no_such_check").is_none());
}

#[test]
fn checks_can_run_concurrently_on_one_factory() {
    // Fresh resources per check mean checks never see each other's locks.
    let runs = CHECKS.iter().map(|c| c.run(&Memory, MEMORY));
    for (entry, outcome) in CHECKS.iter().zip(block_on(futures::future::join_all(runs))) {
        assert!(!outcome.is_failure(), "{}: {outcome:?}", entry.name());
    }
}

#[test]
fn check_futures_are_send() {
    // So that a backend needing a multi-threaded runtime can spawn them.
    fn assert_send<T: Send>(_: T) {}
    assert_send(run_all(&Memory, MEMORY));
    assert_send(CHECKS[0].run(&Memory, MEMORY));
}

#[test]
fn closures_are_factories_and_resources() {
    let factory = || -> Result<Box<dyn Resource>, BackendError> {
        let lock = MemoryBackend::new("closure");
        Ok(Box::new(
            move || -> Result<Arc<dyn LockBackend>, BackendError> { Ok(Arc::new(lock.clone())) },
        ))
    };
    let report = block_on(run_all(&factory, MEMORY));
    assert!(report.passed(), "{report}");
    block_on(check_create_race(&factory, MEMORY)).unwrap();
}

#[test]
fn unclaimed_release_blocking_is_reported_not_skipped() {
    // MemoryBackend has release_blocking; not claiming it must not let the
    // behaviour go unchecked.
    let report = block_on(run_all(&Memory, Capabilities::new()));
    assert_eq!(report.failed_checks(), ["release_blocking"], "{report}");
    let message = report.failures().next().unwrap().to_string();
    assert!(message.contains("claim it"), "{message}");
}

#[test]
fn a_small_tolerance_still_passes() {
    let caps = MEMORY.with_stamp_tolerance(Duration::from_secs(1));
    let report = block_on(run_all(&Memory, caps));
    assert!(report.passed(), "{report}");
}
