//! What a look at a present lock says about its holder, for people (one
//! line) and for programs (JSON).

use std::time::{Duration, SystemTime};

use heldlock::backend::{HostProbe, LocalHost, Observed};
use heldlock::{DEFAULT_MAX_DECLARED_STALE, Holder, LockRecord};

use crate::duration::show;

/// Which format the lock file's content is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// A record with `key=value` fields after the three fixed ones: heldlock's.
    Heldlock,
    /// Exactly `<pid> <owner> <time>`: the reference implementation's format
    /// (which heldlock also writes while it records no extra fields).
    Reference,
    /// A lock without a whole record (empty, cut short by a crash, or
    /// unreadable): judged by age only.
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
            Format::Foreign => {
                "no whole record (empty, cut short or unreadable; judged by age only)"
            }
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
    /// Whether a live process on this host holds it through a kernel lock
    /// (the holder, or a command that inherited its descriptor): never
    /// stale, whatever its age.
    pub(crate) kernel_held: bool,
    /// Whether it can be told from somebody's file (`false` for a file
    /// heldlock may not read): never stale, since it is never broken.
    pub(crate) breakable: bool,
    /// Whether its holder ran on this host, boot and namespaces and is
    /// provably gone (what `run` breaks at once): stale whatever its age.
    pub(crate) holder_dead: bool,
    /// When the lock was looked at, by this host's clock.
    pub(crate) seen_at: SystemTime,
    /// Whether it is an etcd lock: held under a lease that etcd ends, so
    /// never stale to a contender (nor `breakable`).
    pub(crate) leased: bool,
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
            other => (None, Some(other.to_string())),
        };
        let host = LocalHost::new();
        let kernel_held = observed.kernel_held
            && record
                .as_ref()
                .is_some_and(|record| host.shares_host(record));
        // The same verdict as `run`'s: a kernel lock proves life first.
        let holder_dead = !kernel_held
            && observed.breakable
            && record
                .as_ref()
                .is_some_and(|record| host.holder_is_dead(record));
        View {
            record,
            summary,
            refreshed_at: observed.refreshed_at,
            age,
            stamp_in_future,
            kernel_held,
            breakable: observed.breakable,
            holder_dead,
            seen_at: now,
            leased: false,
        }
    }

    /// This view, of an etcd lock.
    pub(crate) fn leased(mut self, leased: bool) -> Self {
        self.leased = leased;
        self
    }

    /// The age after which the lock is stale for a contender whose own is
    /// `stale`: the longer of it and the one its holder declared (capped as
    /// the library caps it by default).
    pub(crate) fn stale_after(&self, stale: Duration) -> Duration {
        self.record
            .as_ref()
            .and_then(LockRecord::declared_stale)
            .map_or(stale, |declared| {
                stale.max(declared.min(DEFAULT_MAX_DECLARED_STALE))
            })
    }

    /// Whether the lock may be broken, as `run` judges it: its holder is
    /// provably dead on this host, or its stamp is older than
    /// [`stale_after`](Self::stale_after) (a stamp in the future never is);
    /// never while a live process on this host holds it.
    pub(crate) fn is_stale(&self, stale: Duration) -> bool {
        self.breakable
            && !self.kernel_held
            && (self.holder_dead || (!self.stamp_in_future && self.age > self.stale_after(stale)))
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
            (None, summary) => format!(
                "a lock without a whole record (\"{}\")",
                summary.as_deref().unwrap_or_default()
            ),
        }
    }

    /// The holder, how long ago it took the lock (by its record's time)
    /// and how long ago it last refreshed it (the stamp), judged against
    /// `stale`, as one phrase: `pid 123 on h, taken 5 min 2 s ago, last
    /// heartbeat 3.2 s ago (stale after 30 s)`.
    pub(crate) fn held_for(&self, stale: Duration) -> String {
        let heartbeat = if self.stamp_in_future {
            "its stamp in the future".to_owned()
        } else {
            format!("last heartbeat {} ago", show(self.age))
        };
        let now = self.seen_at;
        let taken = self
            .record
            .as_ref()
            .and_then(|record| now.duration_since(record.acquired_at).ok())
            .map(|ago| format!("taken {} ago, ", show(ago)))
            .unwrap_or_default();
        let stale = self.stale_after(stale);
        let judgement = if self.leased {
            "held under an etcd lease: etcd frees it once its holder stops renewing".to_owned()
        } else if self.kernel_held {
            "held by a live process on this host: never stale while it runs".to_owned()
        } else if !self.breakable {
            "unreadable: never broken by heldlock".to_owned()
        } else if self.holder_dead {
            "stale: its holder is gone from this host".to_owned()
        } else if self.is_stale(stale) {
            format!("stale: older than {}", show(stale))
        } else {
            format!("stale after {}", show(stale))
        };
        format!("{}, {taken}{heartbeat} ({judgement})", self.who())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heldlock::backend::Identity;

    fn observed(holder: Holder, age: Duration, now: SystemTime) -> Observed {
        Observed::new(holder, Identity::new(vec![1u8]), now - age)
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
        let mut future = observed(record(vec![]), Duration::ZERO, now);
        future.refreshed_at = now + Duration::from_secs(600);
        let future = View::new(&future, now);
        assert!(!future.is_stale(stale));
        assert_eq!(future.age, Duration::ZERO);
    }

    #[test]
    fn names_pid_host_and_format() {
        let now = SystemTime::now();
        let mut taken = observed(record(vec![]), Duration::from_millis(3200), now);
        if let Holder::Record(record) = &mut taken.holder {
            record.acquired_at = now - Duration::from_secs(302);
        }
        let plain = View::new(&taken, now);
        assert_eq!(plain.format(), Format::Reference);
        assert_eq!(
            plain.held_for(Duration::from_secs(30)),
            "pid 4242, taken 5 min 2 s ago, last heartbeat 3.2 s ago (stale after 30 s)"
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
