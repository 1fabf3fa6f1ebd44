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

    /// How long, from `now`, until the first beat: `heartbeat` after the
    /// stamp the lock was created with. A create that took long (a slow
    /// file system, a process paused half-way) has used part of that time
    /// already; counting from its return instead would leave the lock
    /// unrefreshed for up to the create's length plus a heartbeat.
    pub fn first(&self, now: Instant) -> Duration {
        (self.last_stamp + self.timing.heartbeat).saturating_duration_since(now)
    }

    /// The next step after a refresh that started at `started` (just before
    /// its stamp was taken) and returned `result` at `now` (`None` when the
    /// refresh failed with an error).
    #[must_use]
    pub fn after(&mut self, result: Option<Refreshed>, started: Instant, now: Instant) -> Beat {
        match result {
            Some(Refreshed::Refreshed) => {
                // Beats are `heartbeat` apart from stamp to stamp, however
                // long the refresh itself took.
                self.last_stamp = started;
                Beat::Again((started + self.timing.heartbeat).saturating_duration_since(now))
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{Beat, Heartbeat};
    use crate::{LockOptions, Refreshed};

    fn timing() -> crate::Timing {
        // stale 3 s, heartbeat 1 s.
        match LockOptions::new(Duration::from_secs(3)).validate() {
            Ok(timing) => timing,
            Err(error) => panic!("valid options: {error}"),
        }
    }

    #[test]
    fn the_first_beat_is_a_heartbeat_after_the_stamp_not_after_the_create() {
        let t = timing();
        let stamped = Instant::now();
        let hb = Heartbeat::new(t, stamped);
        // The create returned 400 ms after its stamp: 600 ms are left.
        let returned = stamped + Duration::from_millis(400);
        assert_eq!(hb.first(returned), t.heartbeat - Duration::from_millis(400));
        // A create that took longer than a heartbeat beats at once.
        assert_eq!(hb.first(stamped + t.heartbeat * 2), Duration::ZERO);
    }

    #[test]
    fn beats_are_a_heartbeat_apart_from_stamp_to_stamp() {
        let t = timing();
        let start = Instant::now();
        let mut hb = Heartbeat::new(t, start);
        let started = start + t.heartbeat;
        // The refresh took 300 ms: the next beat is 700 ms after it returned.
        let returned = started + Duration::from_millis(300);
        assert_eq!(
            hb.after(Some(Refreshed::Refreshed), started, returned),
            Beat::Again(t.heartbeat - Duration::from_millis(300))
        );
        assert_eq!(hb.expiry(), started + t.stale);
    }
}
