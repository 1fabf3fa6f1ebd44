//! Work done at most once per key and period in a process: the sweeps that
//! list a directory (abandoned trash beside a lock, abandoned waiter
//! queues), whose cost grows with the directory and must not be paid at
//! every acquisition or every emptied queue.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// When each key's work was last done, in this process.
#[derive(Debug)]
pub(crate) struct Throttle<K> {
    last: Mutex<Vec<(K, Instant)>>,
}

impl<K: PartialEq> Throttle<K> {
    /// A throttle under which nothing was done yet.
    pub(crate) const fn new() -> Self {
        Throttle {
            last: Mutex::new(Vec::new()),
        }
    }

    /// Whether `key`'s work is due (never done, or not within `every`, or
    /// `force`d), noting it done now if so. The keys are few (one per lock
    /// directory a process uses), hence a list.
    pub(crate) fn due(&self, key: K, every: Duration, force: bool) -> bool {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        match last.iter_mut().find(|(known, _)| *known == key) {
            Some((_, at)) if !force && now.saturating_duration_since(*at) < every => false,
            Some((_, at)) => {
                *at = now;
                true
            }
            None => {
                last.push((key, now));
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_once_per_key_and_period_unless_forced() {
        let throttle = Throttle::new();
        let hour = Duration::from_secs(3600);
        assert!(throttle.due("a", hour, false));
        assert!(!throttle.due("a", hour, false));
        assert!(throttle.due("b", hour, false), "another key");
        assert!(throttle.due("a", hour, true), "forced");
        assert!(
            throttle.due("a", Duration::ZERO, false),
            "the period passed"
        );
    }
}
