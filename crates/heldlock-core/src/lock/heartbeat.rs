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
/// (an I/O error) is retried at the next beat, unless that beat would come
/// too late: a peer may break the lock once `stale` has passed since our last
/// successful stamp was written, so as soon as the next beat would fall at or
/// after that moment, ownership is declared lost *now*, before any peer can
/// act on it.
#[derive(Clone, Debug)]
pub struct Heartbeat {
    timing: Timing,
    /// When the last successful stamp was written (the refresh's start).
    last_stamp: Instant,
}

impl Heartbeat {
    /// A heartbeat for a lock stamped at `stamped` (when it was created).
    pub fn new(timing: Timing, stamped: Instant) -> Self {
        Heartbeat {
            timing,
            last_stamp: stamped,
        }
    }

    /// When the lease expires unless a refresh succeeds: the last successful
    /// stamp plus `stale`. Peers may break the lock from then on.
    pub fn expiry(&self) -> Instant {
        self.last_stamp + self.timing.stale
    }

    /// How long until the first beat.
    pub fn first(&self) -> Duration {
        self.timing.heartbeat
    }

    /// The next step after a refresh that started at `started` (just before
    /// its stamp was taken) and returned `result` at `now` (`None` when the
    /// refresh failed with an error).
    #[must_use]
    pub fn after(&mut self, result: Option<Refreshed>, started: Instant, now: Instant) -> Beat {
        match result {
            Some(Refreshed::Refreshed) => {
                self.last_stamp = started;
                Beat::Again(self.timing.heartbeat)
            }
            Some(Refreshed::Lost) => Beat::Lost,
            None => {
                let next_beat = now + self.timing.heartbeat;
                if next_beat >= self.last_stamp + self.timing.stale {
                    Beat::Lost
                } else {
                    Beat::Again(self.timing.heartbeat)
                }
            }
        }
    }
}
