//! What a held lock tells `tracing`, and the field values it uses.
//!
//! Spans (all `DEBUG`, fields `resource` and `owner`, ours):
//!
//! | span | covers | where |
//! | --- | --- | --- |
//! | `acquire` | one `acquire` or `try_acquire`; `owner` is recorded once the record is made | `driver.rs` |
//! | `hold` | the lock's life, from its creation until its release (a root span, created with the lock; the heartbeat task runs in it once its first beat starts it) | `lease/` |
//! | `release` | `HeldLock::release`, or the release on drop | `lease/` |
//!
//! Events, each emitted where its decision is made, once:
//!
//! | level | message | fields | where |
//! | --- | --- | --- | --- |
//! | `WARN` | `broke a stale lock` | `resource`, `holder.pid`, `holder.host`, `holder.owner` (or `holder.summary` for a lock without a record), `age`, `reason` | the driver, after `Broke::Broken` |
//! | `WARN` | `lost the lock` | `resource`, `owner`, `reason` | `Lease::mark_lost` |
//! | `WARN` | the warning's text | `resource` | `LockOptions::warn` (every warning the hook gets, but a loss) |
//! | `DEBUG` | `acquired` | `waited`, `via` (`free`, `release` for a hand-off, `holder_exit`, `poll`, `break`, `turn` after waiting behind an older waiter) | the driver |
//! | `DEBUG` | `released` | `held` | `Lease::note_release` |
//! | `DEBUG` | `waiting` | `holder` | the driver, at the first sleep |
//! | `DEBUG` | `woken` | `by` (`release`, `holder_exit`) | the driver |
//! | `DEBUG` | `did not break the stale lock` | `outcome` | the driver |
//! | `DEBUG` | `gave up waiting` | `waited`, `holder` | `Lock::timed_out` |
//! | `TRACE` | `woken` | `by = poll` | the driver |
//! | `TRACE` | `refreshed` | | the heartbeat |
//!
//! Fields are recorded with `%` (`Display`) wrappers evaluated only when a
//! subscriber wants the event: a lock nobody listens to formats nothing.

use std::fmt;
use std::time::{Duration, SystemTime};

use super::stale::StaleReason;

/// A duration for a log field: [`Rounded`](crate::Rounded) without its
/// spaces (`202ms`, `3.2s`, `2min5s`), so that `key=value` output stays
/// one token per field.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Compact(pub(crate) Duration);

impl fmt::Display for Compact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// Passes text on without its spaces.
        struct NoSpaces<'a, 'b>(&'a mut fmt::Formatter<'b>);
        impl fmt::Write for NoSpaces<'_, '_> {
            fn write_str(&mut self, text: &str) -> fmt::Result {
                text.split(' ').try_for_each(|part| self.0.write_str(part))
            }
        }
        fmt::write(&mut NoSpaces(f), format_args!("{}", crate::Rounded(self.0)))
    }
}

/// How long ago `stamp` was by `now` (zero for a stamp in the future).
pub(crate) fn age(stamp: SystemTime, now: SystemTime) -> Compact {
    Compact(now.duration_since(stamp).unwrap_or_default())
}

/// The `reason` field of a stale break.
pub(crate) fn stale_reason(reason: StaleReason) -> &'static str {
    match reason {
        StaleReason::OldStamp { .. } => "old_stamp",
        StaleReason::Unchanged { .. } => "unchanged",
        StaleReason::HolderDead => "holder_dead",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_durations_are_one_token() {
        let shown = |d: Duration| Compact(d).to_string();
        assert_eq!(shown(Duration::from_micros(201_513)), "202ms");
        assert_eq!(shown(Duration::from_millis(3_249)), "3.2s");
        assert_eq!(shown(Duration::from_secs(40)), "40s");
        assert_eq!(shown(Duration::from_secs(125)), "2min5s");
        assert_eq!(shown(Duration::from_secs(3_660)), "1h1min");
    }
}
