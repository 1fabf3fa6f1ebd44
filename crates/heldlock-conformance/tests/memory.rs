//! The suite on the reference backend, `heldlock_core::MemoryBackend`, plus
//! the suite's own plumbing: names, capabilities, parallel runs.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::executor::block_on;
use heldlock_conformance::{
    BackendFactory, CHECKS, Capabilities, Capability, Failure, Outcome, Resource, SharedClones,
    check, check_create_race, check_listen, run_all,
};
use heldlock_core::{
    BackendError, Broke, Created, Inspection, LockBackend, LockRecord, MemoryBackend, Observed,
    OwnerId, Refreshed, Released,
};

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
    // MemoryBackend cannot notify, so it does not claim `listen`.
    for (name, outcome) in report.outcomes() {
        match name {
            "listen" => assert!(
                matches!(
                    outcome,
                    Outcome::Skipped {
                        needs: Capability::Listen
                    }
                ),
                "{name}: {outcome:?}"
            ),
            _ => assert!(matches!(outcome, Outcome::Passed), "{name}: {outcome:?}"),
        }
    }
    let passed = CHECKS.len() - 1;
    assert!(
        report
            .to_string()
            .contains(&format!("{passed} passed, 0 failed, 1 skipped")),
        "{report}"
    );
    assert!(
        report
            .to_string()
            .contains("skipped listen (needs capability `listen`)"),
        "{report}"
    );
}

#[test]
fn check_names_are_unique_and_match_their_functions() {
    // An impossible tolerance makes every check fail before it touches the
    // backend, with the name the check function itself uses: this catches a
    // `CHECKS` entry whose name and function disagree.
    let caps = Capabilities::new()
        .with_listen(true)
        .with_stamp_tolerance(Duration::from_secs(5));
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

#[test]
fn claiming_listen_without_a_listener_fails() {
    // MemoryBackend's `listen` is `None`: a claim it cannot keep is caught.
    let report = block_on(run_all(&Memory, MEMORY.with_listen(true)));
    assert_eq!(report.failed_checks(), ["listen"], "{report}");
    let message = report.failures().next().unwrap().to_string();
    assert!(
        message.contains("expected Some(listener), since Capabilities::listen is claimed"),
        "{message}"
    );
    // Called directly without the claim, the check has nothing to check.
    block_on(check_listen(&Memory, MEMORY)).unwrap();
}

#[test]
fn capabilities_default_is_new() {
    assert_eq!(Capabilities::default(), Capabilities::new());
    assert_eq!(
        Capabilities::new().notify_within,
        heldlock_conformance::DEFAULT_NOTIFY_WITHIN
    );
}

/// `MemoryBackend` whose steps each await twice before they act, as a
/// backend that talks to a server would: nothing is done before the last
/// await, so dropping a step at any of them is safe.
#[derive(Clone, Debug)]
struct Yielding(MemoryBackend);

/// Returns `Pending` twice (asking to be polled again each time).
async fn two_awaits() {
    let mut left = 2;
    std::future::poll_fn(|task| {
        if left == 0 {
            return std::task::Poll::Ready(());
        }
        left -= 1;
        task.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await;
}

#[async_trait::async_trait]
impl LockBackend for Yielding {
    fn resource(&self) -> String {
        self.0.resource()
    }
    async fn try_create(&self, record: &LockRecord) -> Result<Created, BackendError> {
        two_awaits().await;
        self.0.try_create(record).await
    }
    async fn inspect(&self) -> Result<Inspection, BackendError> {
        two_awaits().await;
        self.0.inspect().await
    }
    async fn refresh(&self, owner: &OwnerId, now: SystemTime) -> Result<Refreshed, BackendError> {
        two_awaits().await;
        self.0.refresh(owner, now).await
    }
    async fn break_if_unchanged(&self, observed: &Observed) -> Result<Broke, BackendError> {
        two_awaits().await;
        self.0.break_if_unchanged(observed).await
    }
    async fn release(&self, owner: &OwnerId) -> Result<Released, BackendError> {
        two_awaits().await;
        self.0.release(owner).await
    }
}

#[test]
fn a_backend_whose_steps_await_passes_the_cancel_checks() {
    // Each step is dropped at each of its awaits in turn, without a false
    // failure; and the race is joined in one task, so it really interleaves.
    let factory = || -> Result<Box<dyn Resource>, BackendError> {
        Ok(Box::new(SharedClones(Yielding(MemoryBackend::new(
            "yielding",
        )))))
    };
    let report = block_on(run_all(&factory, Capabilities::new()));
    assert!(report.passed(), "{report}");
    for name in ["cancel_create", "cancel_release", "create_race"] {
        assert!(
            matches!(report.outcome(name), Some(Outcome::Passed)),
            "{name}: {report}"
        );
    }
}
