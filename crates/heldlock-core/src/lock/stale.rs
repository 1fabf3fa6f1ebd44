//! Stale judgment: is the holder of an observed lock presumed dead?

use std::time::{Duration, Instant, SystemTime};

use super::options::Timing;
use super::record::{Identity, Observed};

/// A moment by both clocks, as the machines take it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Wall-clock time, compared with stamps written by other hosts.
    pub wall: SystemTime,
    /// Monotonic time, for deadlines and durations of our own.
    pub instant: Instant,
}

/// Why a lock was judged stale. More reasons may come: match it with a
/// wildcard arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StaleReason {
    /// Its stamp is older than `stale + max_clock_skew` by our wall clock.
    OldStamp {
        /// How old the stamp is.
        age: Duration,
    },
    /// Neither its identity nor its stamp changed for `stale` of our
    /// monotonic time.
    Unchanged {
        /// How long it stayed unchanged.
        for_: Duration,
    },
    /// Its holder ran on this host, boot and pid namespace, and that process
    /// is gone (see `HostProbe`).
    HolderDead,
}

/// The verdict on one observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The holder is presumed alive.
    Fresh,
    /// The holder is presumed dead; the lock may be broken.
    Stale(StaleReason),
}

/// Judges observations of one lock over time.
///
/// Two rules, either of which makes a lock stale:
///
/// 1. *old stamp* (when [`Timing::wall_clock_rule`] is on): the stamp is older
///    than `stale + max_clock_skew` by our wall clock. Decides at once, but
///    trusts that the clocks of all hosts agree within `max_clock_skew`.
/// 2. *unchanged*: the same identity with the same stamp has been seen for
///    `stale` of our own monotonic time. Immune to clock skew and steps, but
///    needs a full `stale` of watching.
#[derive(Clone, Debug, Default)]
pub struct StaleJudge {
    /// The observation being watched and when we first saw it.
    watched: Option<(Identity, SystemTime, Instant)>,
}

impl StaleJudge {
    /// A judge that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets what was watched: the holder was seen alive (proof of life),
    /// so an unchanged stamp since then says nothing about its death.
    pub fn forget(&mut self) {
        self.watched = None;
    }

    /// Judges `observed` at `now`, remembering it for the unchanged rule.
    #[must_use]
    pub fn judge(&mut self, observed: &Observed, now: Now, timing: &Timing) -> Verdict {
        if !observed.breakable {
            self.watched = None;
            return Verdict::Fresh;
        }
        // A holder's declared stale age counts when it is longer than ours:
        // between two of its heartbeats, its lock is fresh to everyone.
        let stale = timing.stale_for(observed);
        if timing.wall_clock_rule
            && let Ok(age) = now.wall.duration_since(observed.refreshed_at)
            && age > stale.saturating_add(timing.max_clock_skew)
        {
            return Verdict::Stale(StaleReason::OldStamp { age });
        }
        let same = self.watched.as_ref().is_some_and(|(identity, stamp, _)| {
            *identity == observed.identity && *stamp == observed.refreshed_at
        });
        if !same {
            self.watched = Some((
                observed.identity.clone(),
                observed.refreshed_at,
                now.instant,
            ));
            return Verdict::Fresh;
        }
        let since = self
            .watched
            .as_ref()
            .map_or(now.instant, |(_, _, since)| *since);
        let unchanged = now.instant.saturating_duration_since(since);
        if unchanged >= stale {
            Verdict::Stale(StaleReason::Unchanged { for_: unchanged })
        } else {
            Verdict::Fresh
        }
    }
}
