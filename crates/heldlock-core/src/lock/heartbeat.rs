//! The heartbeat policy of a holder: when to refresh next, and when to
//! conclude that ownership is lost.

use std::time::{Duration, Instant};

use super::backend::Refreshed;
use super::options::Timing;

/// What the heartbeat does after a refresh attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Beat {
    /// Refresh again after this long.
    Again(Duration),
    /// Ownership is lost: signal it and stop.
    Lost,
}

/// Decides the heartbeat's next step from each refresh result.
///
/// A refresh that reports `Lost` ends the lease at once. A refresh that fails
/// (an I/O error) is retried at the next beat; once no refresh has succeeded
/// for `stale`, the lock may have been broken by a peer, so ownership is
/// considered lost even without proof.
#[derive(Clone, Debug)]
pub struct Heartbeat {
    timing: Timing,
    last_confirmed: Instant,
}

impl Heartbeat {
    /// A heartbeat for a lock confirmed ours at `now` (just acquired).
    pub fn new(timing: Timing, now: Instant) -> Self {
        Heartbeat {
            timing,
            last_confirmed: now,
        }
    }

    /// How long until the first beat.
    pub fn first(&self) -> Duration {
        self.timing.heartbeat
    }

    /// The next step after a refresh that returned `result` at `now`
    /// (`None` when the refresh failed with an error).
    #[must_use]
    pub fn after(&mut self, result: Option<Refreshed>, now: Instant) -> Beat {
        match result {
            Some(Refreshed::Refreshed) => {
                self.last_confirmed = now;
                Beat::Again(self.timing.heartbeat)
            }
            Some(Refreshed::Lost) => Beat::Lost,
            None if now.saturating_duration_since(self.last_confirmed) >= self.timing.stale => {
                Beat::Lost
            }
            None => Beat::Again(self.timing.heartbeat),
        }
    }
}
