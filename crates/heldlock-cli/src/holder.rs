//! What a look at a present lock says about its holder, for people (one
//! line) and for programs (JSON).

use std::time::{Duration, SystemTime};

use heldlock::backend::Observed;
use heldlock::{Holder, LockRecord};

use crate::duration::show;

/// Which format the lock file's content is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// A record with `key=value` fields after the three fixed ones: heldlock's.
    Heldlock,
    /// Exactly `<pid> <owner> <time>`: the reference implementation's format
    /// (which heldlock also writes while it records no extra fields).
    Reference,
    /// Content that does not parse as a record, or not a regular file:
    /// somebody else's lock, broken only by age.
    Foreign,
}

impl Format {
    /// The name used in JSON.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Format::Heldlock => "heldlock",
            Format::Reference => "reference",
            Format::Foreign => "foreign",
        }
    }

    /// A description for people.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Format::Heldlock => "heldlock record (pid, owner, time and key=value fields)",
            Format::Reference => "three-field record (pid, owner, time: the reference's format)",
            Format::Foreign => "foreign (not a lock record; breakable by age only)",
        }
    }
}

/// One look at a present lock, with its age judged against a clock.
#[derive(Clone, Debug)]
pub(crate) struct View {
    /// The record, when the content parsed as one.
    pub(crate) record: Option<LockRecord>,
    /// For a foreign lock, a printable excerpt of what stands there.
    pub(crate) summary: Option<String>,
    /// The lock's stamp: when its holder last refreshed it (the file's mtime).
    pub(crate) refreshed_at: SystemTime,
    /// Time since the stamp; zero for a stamp in the future.
    pub(crate) age: Duration,
    /// Whether the stamp lies in the future of our clock (never stale by the
    /// wall-clock rule).
    pub(crate) stamp_in_future: bool,
}

impl View {
    /// Looks at `observed` as of `now`.
    pub(crate) fn new(observed: &Observed, now: SystemTime) -> Self {
        let (age, stamp_in_future) = match now.duration_since(observed.refreshed_at) {
            Ok(age) => (age, false),
            Err(_) => (Duration::ZERO, true),
        };
        let (record, summary) = match &observed.holder {
            Holder::Record(record) => (Some(record.clone()), None),
            Holder::Foreign { summary } => (None, Some(summary.clone())),
        };
        View {
            record,
            summary,
            refreshed_at: observed.refreshed_at,
            age,
            stamp_in_future,
        }
    }

    /// Whether the lock is stale by the wall-clock rule: its stamp is older
    /// than `stale` (a stamp in the future never is).
    pub(crate) fn is_stale(&self, stale: Duration) -> bool {
        !self.stamp_in_future && self.age > stale
    }

    /// The record's format.
    pub(crate) fn format(&self) -> Format {
        match &self.record {
            Some(record) if record.fields.is_empty() => Format::Reference,
            Some(_) => Format::Heldlock,
            None => Format::Foreign,
        }
    }

    /// The holder's host, when its record has a `host=` field.
    pub(crate) fn host(&self) -> Option<&str> {
        self.record.as_ref().and_then(|record| record.field("host"))
    }

    /// Who holds the lock, briefly: `pid 123 on build-7`, or a foreign lock's
    /// excerpt.
    pub(crate) fn who(&self) -> String {
        match (&self.record, &self.summary) {
            (Some(record), _) => match self.host() {
                Some(host) => format!("pid {} on {host}", record.pid),
                None => format!("pid {}", record.pid),
            },
            (None, Some(summary)) if summary == "<a symbolic link>" => {
                "a symbolic link, never followed (a foreign lock)".to_owned()
            }
            (None, summary) => format!(
                "a foreign lock ({:?})",
                summary.as_deref().unwrap_or_default()
            ),
        }
    }

    /// The holder and the age of its stamp against `stale`, as one phrase:
    /// `pid 123 on h for 3.2 s (stale after 30 s)`.
    pub(crate) fn held_for(&self, stale: Duration) -> String {
        let age = if self.stamp_in_future {
            "a stamp in the future".to_owned()
        } else {
            show(self.age)
        };
        let judgement = if self.is_stale(stale) {
            format!("stale: older than {}", show(stale))
        } else {
            format!("stale after {}", show(stale))
        };
        format!("{} for {age} ({judgement})", self.who())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heldlock::backend::Identity;

    fn observed(holder: Holder, age: Duration, now: SystemTime) -> Observed {
        Observed {
            holder,
            identity: Identity::new(vec![1u8]),
            refreshed_at: now - age,
        }
    }

    fn record(fields: Vec<(String, String)>) -> Holder {
        let mut record = LockRecord::for_this_process(SystemTime::UNIX_EPOCH);
        record.pid = 4242;
        record.fields = fields;
        Holder::Record(record)
    }

    #[test]
    fn judges_staleness_by_the_stamp() {
        let now = SystemTime::now();
        let stale = Duration::from_secs(30);
        let fresh = View::new(&observed(record(vec![]), Duration::from_secs(3), now), now);
        assert!(!fresh.is_stale(stale));
        let old = View::new(&observed(record(vec![]), Duration::from_secs(31), now), now);
        assert!(old.is_stale(stale));
        let future = Observed {
            refreshed_at: now + Duration::from_secs(600),
            ..observed(record(vec![]), Duration::ZERO, now)
        };
        let future = View::new(&future, now);
        assert!(!future.is_stale(stale));
        assert_eq!(future.age, Duration::ZERO);
    }

    #[test]
    fn names_pid_host_and_format() {
        let now = SystemTime::now();
        let plain = View::new(
            &observed(record(vec![]), Duration::from_millis(3200), now),
            now,
        );
        assert_eq!(plain.format(), Format::Reference);
        assert_eq!(
            plain.held_for(Duration::from_secs(30)),
            "pid 4242 for 3.2 s (stale after 30 s)"
        );
        let hosted = record(vec![("host".into(), "build-7".into())]);
        let hosted = View::new(&observed(hosted, Duration::from_secs(1), now), now);
        assert_eq!(hosted.format(), Format::Heldlock);
        assert_eq!(hosted.who(), "pid 4242 on build-7");
        let foreign = Holder::Foreign {
            summary: "garbage".into(),
        };
        let foreign = View::new(&observed(foreign, Duration::from_secs(1), now), now);
        assert_eq!(foreign.format(), Format::Foreign);
        assert!(foreign.who().contains("garbage"));
    }
}
