//! What a check and a whole run found.

use std::fmt;

use heldlock_core::BackendError;

use crate::capabilities::Capability;

/// Why a check failed. Every variant names the check, and the message says
/// which step went wrong and what was expected against what was found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Failure {
    /// The backend answered, but not as the `LockBackend` contract requires.
    #[error("check `{check}` failed at \"{step}\": expected {expected}; found {found}")]
    Mismatch {
        /// The check's name, as in [`CHECKS`](crate::CHECKS).
        check: &'static str,
        /// The step of the check, e.g. "peer B's release of A's lock".
        step: String,
        /// What the contract requires.
        expected: String,
        /// What the backend did.
        found: String,
    },
    /// The backend returned an error for a step it should have carried out
    /// (or the factory could not make a resource or a handle).
    // The error is in the message and deliberately not a `#[source]`, so that
    // a one-line print of a failure (the usual test output) shows it, and a
    // chain printer does not show it twice.
    #[error("check `{check}` failed at \"{step}\": the backend returned an error: {error}")]
    Backend {
        /// The check's name, as in [`CHECKS`](crate::CHECKS).
        check: &'static str,
        /// The step of the check.
        step: String,
        /// The backend's error.
        error: BackendError,
    },
    /// The check cannot run with the declared [`Capabilities`](crate::Capabilities).
    #[error("check `{check}` cannot run: {problem}")]
    Misconfigured {
        /// The check's name, as in [`CHECKS`](crate::CHECKS).
        check: &'static str,
        /// What is wrong and how to fix it.
        problem: String,
    },
}

impl Failure {
    /// The name of the check that failed.
    pub fn check(&self) -> &'static str {
        match self {
            Failure::Mismatch { check, .. }
            | Failure::Backend { check, .. }
            | Failure::Misconfigured { check, .. } => check,
        }
    }
}

/// The outcome of one check in a run.
#[derive(Debug)]
#[non_exhaustive]
pub enum Outcome {
    /// The backend met every expectation of the check.
    Passed,
    /// The backend broke the contract (or could not be set up).
    Failed(Failure),
    /// The check tests an optional behaviour the backend did not claim.
    Skipped {
        /// The capability the check needs.
        needs: Capability,
    },
}

impl Outcome {
    /// Whether this outcome is a failure.
    pub fn is_failure(&self) -> bool {
        matches!(self, Outcome::Failed(_))
    }
}

/// The outcomes of [`run_all`](crate::run_all): one per entry of
/// [`CHECKS`](crate::CHECKS), in that order.
///
/// Its `Display` lists every check with its outcome, so
/// `assert!(report.passed(), "{report}")` shows the whole picture.
#[derive(Debug)]
pub struct Report {
    pub(crate) outcomes: Vec<(&'static str, Outcome)>,
}

impl Report {
    /// True when no check failed (skipped checks do not count as failures).
    pub fn passed(&self) -> bool {
        !self
            .outcomes
            .iter()
            .any(|(_, outcome)| outcome.is_failure())
    }

    /// Every check's name with its outcome, in [`CHECKS`](crate::CHECKS) order.
    pub fn outcomes(&self) -> impl Iterator<Item = (&'static str, &Outcome)> {
        self.outcomes.iter().map(|(name, outcome)| (*name, outcome))
    }

    /// The outcome of the check named `name`, if the run has one.
    pub fn outcome(&self, name: &str) -> Option<&Outcome> {
        self.outcomes().find(|(n, _)| *n == name).map(|(_, o)| o)
    }

    /// The failures, in check order.
    pub fn failures(&self) -> impl Iterator<Item = &Failure> {
        self.outcomes
            .iter()
            .filter_map(|(_, outcome)| match outcome {
                Outcome::Failed(failure) => Some(failure),
                _ => None,
            })
    }

    /// The names of the failed checks, in check order.
    pub fn failed_checks(&self) -> Vec<&'static str> {
        self.failures().map(Failure::check).collect()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count =
            |pred: fn(&Outcome) -> bool| self.outcomes.iter().filter(|(_, o)| pred(o)).count();
        writeln!(
            f,
            "heldlock conformance: {} passed, {} failed, {} skipped",
            count(|o| matches!(o, Outcome::Passed)),
            count(Outcome::is_failure),
            count(|o| matches!(o, Outcome::Skipped { .. })),
        )?;
        for (name, outcome) in &self.outcomes {
            match outcome {
                Outcome::Passed => writeln!(f, "  ok      {name}")?,
                Outcome::Failed(failure) => writeln!(f, "  FAILED  {name}: {failure}")?,
                Outcome::Skipped { needs } => {
                    writeln!(f, "  skipped {name} (needs capability `{needs}`)")?;
                }
            }
        }
        Ok(())
    }
}
