//! What a holder says about itself, and what a contender observes.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use std::hash::{BuildHasher, RandomState};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use uuid::Builder;

/// 16 unpredictable bytes for the process `pid` (this one's; see
/// [`OwnerId::random`]).
fn random_bytes(pid: u32) -> [u8; 16] {
    static KEYS: LazyLock<(RandomState, RandomState)> =
        LazyLock::new(|| (RandomState::new(), RandomState::new()));
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let input = (COUNTER.fetch_add(1, Ordering::Relaxed), pid);
    let high = KEYS.0.hash_one(input);
    let low = KEYS.1.hash_one(input);
    ((u128::from(high) << 64) | u128::from(low)).to_le_bytes()
}

/// The identity of one acquisition: a random UUID, written into the lock
/// record, and checked before every refresh and release.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct OwnerId(Arc<str>);

impl OwnerId {
    /// A fresh random owner id (UUID v4).
    ///
    /// Its 122 random bits come from SipHash, keyed once per process from the
    /// operating system's randomness, over a counter and the process id: as
    /// unpredictable as the key, unique per process (the pid keeps a forked
    /// child's ids apart from its parent's), and without a system call per
    /// id, which matters on the lock's fast path.
    pub fn random() -> Self {
        Self::random_in(std::process::id())
    }

    /// [`random`](Self::random), given this process's pid (one `getpid`
    /// fewer where the caller has it already).
    fn random_in(pid: u32) -> Self {
        let id = Builder::from_random_bytes(random_bytes(pid)).into_uuid();
        OwnerId(id.hyphenated().to_string().into())
    }

    /// An owner id as read from a record (any non-empty text without white space).
    pub fn from_record(text: &str) -> Option<Self> {
        (!text.is_empty() && !text.contains(char::is_whitespace)).then(|| OwnerId(text.into()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OwnerId({})", self.0)
    }
}

/// The record a holder writes into its lock: who it is and when it took the
/// lock, plus optional facts that let a contender on the same host judge
/// whether the holder is still alive.
///
/// On the file system it is one line, `<pid> <owner> <RFC 3339 UTC time>`
/// followed by optional `key=value` fields; see `heldlock-fs`.
///
/// It may gain fields: build one with [`LockRecord::new`] or
/// [`LockRecord::for_this_process`] (and [`with_fields`](Self::with_fields)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockRecord {
    /// The holder's process id.
    pub pid: u32,
    /// The holder's owner id.
    pub owner: OwnerId,
    /// When the lock was taken, by the holder's wall clock.
    pub acquired_at: SystemTime,
    /// Optional `key=value` fields (`host`, `boot`, `pidns`, `start`, ...), in
    /// the order they were written.
    pub fields: Vec<(String, String)>,
}

impl LockRecord {
    /// A record of `owner`, process `pid`, that took the lock at
    /// `acquired_at`, without fields (a backend decoding what it stored, a
    /// test planting a lock).
    pub fn new(pid: u32, owner: OwnerId, acquired_at: SystemTime) -> Self {
        LockRecord {
            pid,
            owner,
            acquired_at,
            fields: Vec::new(),
        }
    }

    /// A record for this process with a fresh owner id, stamped `now`.
    pub fn for_this_process(now: SystemTime) -> Self {
        let pid = std::process::id();
        LockRecord::new(pid, OwnerId::random_in(pid), now)
    }

    /// This record with `fields` added after the ones it has, in order.
    #[must_use]
    pub fn with_fields<K, V>(mut self, fields: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        self.fields
            .extend(fields.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// The field in which a holder declares its `stale` age, in whole
    /// milliseconds: contenders judge its lock by the longer of theirs and
    /// this one (see `LockOptions::max_declared_stale`).
    pub const STALE_FIELD: &'static str = "stale_ms";

    /// The stale age this record's holder declared, when it declared one
    /// that parses (decimal milliseconds, not zero).
    pub fn declared_stale(&self) -> Option<std::time::Duration> {
        let millis: u64 = self.field(Self::STALE_FIELD)?.parse().ok()?;
        (millis > 0).then(|| std::time::Duration::from_millis(millis))
    }

    /// The value of field `key`, if present.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Who holds a lock, as far as its record tells. More variants may come:
/// match it with a wildcard arm.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Holder {
    /// A record heldlock (or the reference implementation) wrote.
    Record(LockRecord),
    /// A lock without a whole record: empty or cut short (its holder crashed
    /// while writing it), or one the backend may not read. Never judged by
    /// pid; broken only by age, and only when it is
    /// [breakable](Observed::breakable). `summary` is a short, printable
    /// excerpt.
    Foreign {
        /// A short, printable excerpt of the content, for messages.
        summary: String,
    },
}

impl Holder {
    /// The record, when the content parsed as one.
    pub fn record(&self) -> Option<&LockRecord> {
        match self {
            Holder::Record(record) => Some(record),
            Holder::Foreign { .. } => None,
        }
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Holder::Record(r) => {
                write!(f, "pid {}", r.pid)?;
                if let Some(host) = r.field("host") {
                    write!(f, " on {host}")?;
                }
                write!(f, " (owner {})", r.owner)
            }
            // The summary is escaped already (control characters included):
            // quoted, not debug-printed a second time.
            Holder::Foreign { summary } => {
                write!(f, "a lock without a whole record (\"{summary}\")")
            }
        }
    }
}

/// A backend-defined token that names one exact lock instance and content.
///
/// Two observations with equal identities saw the same lock (for files: the
/// same inode with the same content). Backends build it from whatever they
/// can compare; the core only compares it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Identity(Arc<[u8]>);

impl Identity {
    /// An identity from the backend's own bytes.
    pub fn new(bytes: impl Into<Arc<[u8]>>) -> Self {
        Identity(bytes.into())
    }

    /// The bytes the backend built it from.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({} bytes)", self.0.len())
    }
}

/// One look at a present lock.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Observed {
    /// What its record says.
    pub holder: Holder,
    /// Which exact lock instance and content this is.
    pub identity: Identity,
    /// When its holder last refreshed it (acquired or heartbeat), by the
    /// stamp the backend keeps (a file's mtime).
    pub refreshed_at: SystemTime,
    /// Whether the lock may ever be judged stale and broken. `false` when
    /// the backend cannot prove that what it saw is a lock (a file it may
    /// not read): it is honoured while present and never broken.
    pub breakable: bool,
    /// Whether the backend saw proof that a live process holds this lock
    /// (`heldlock-fs`: a kernel lock on the lock file, which the holder takes
    /// and a command it runs inherits). A host probe decides whether the
    /// proof counts (`HostProbe::shares_host`); when it does, the lock is
    /// neither stale nor its holder dead, whatever its age or pid says.
    pub kernel_held: bool,
}

impl Observed {
    /// An observation of a breakable lock without proof of life.
    pub fn new(holder: Holder, identity: Identity, refreshed_at: SystemTime) -> Self {
        Observed {
            holder,
            identity,
            refreshed_at,
            breakable: true,
            kernel_held: false,
        }
    }

    /// Sets [`breakable`](Self::breakable).
    #[must_use]
    pub fn with_breakable(mut self, breakable: bool) -> Self {
        self.breakable = breakable;
        self
    }

    /// Sets [`kernel_held`](Self::kernel_held).
    #[must_use]
    pub fn with_kernel_held(mut self, held: bool) -> Self {
        self.kernel_held = held;
        self
    }
}

/// The result of [`LockBackend::inspect`](crate::LockBackend::inspect). More
/// variants may come: match it with a wildcard arm.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Inspection {
    /// Nobody holds the lock.
    Absent,
    /// Somebody holds it.
    Present(Observed),
}
