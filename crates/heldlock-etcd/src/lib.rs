//! An etcd v3 backend for heldlock: a held lock is one etcd key bound to an
//! etcd lease, so a holder that dies loses its lock when etcd expires the
//! lease, whatever any other host's clock says.
//!
//! The smallest working use: connect an [`EtcdLock`] (the core's generic
//! [`Lock`](heldlock_core::Lock) over the backend, on a runtime) and hold
//! it (needs a running etcd; `docs/backends.md` has a runnable example, and
//! the facade `heldlock` names it `heldlock::etcd::EtcdLock` with its `etcd`
//! feature).
//!
//! ```no_run
//! use std::time::Duration;
//! use heldlock_core::LockOptions;
//! use heldlock_etcd::EtcdLock;
//! use heldlock_tokio::TokioRuntime;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let options = LockOptions::new(Duration::from_secs(10)); // the lease's TTL
//! let lock = EtcdLock::<TokioRuntime>::connect(&["http://127.0.0.1:2379"], "locks/catalog", options).await?;
//! let held = lock.acquire().await?;
//! let token = held.fencing_token(); // the key's create revision, see below
//! if held.refresh().await? {
//!     println!("still ours (token {token:?}): write");
//! }
//! held.release().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # How the lock maps onto etcd
//!
//! | core step | etcd |
//! | --- | --- |
//! | `try_create` | grant a lease of TTL = the lock's `stale` (see below), then one transaction: *if* the key's create revision is 0 (absent) *then* put the record bound to the lease |
//! | `inspect` | get the key; the observation is marked never breakable |
//! | `refresh` | keep the lease alive once (a lease etcd no longer has means the lock is lost), then re-stamp the record in a transaction guarded like release's |
//! | `release` | one transaction: *if* the create revision is ours *and* the value is the one we wrote (it names our owner id) *then* delete the key; then revoke the lease |
//! | `break_if_unchanged` | one transaction: delete *if* create and mod revision are still the observed ones (the core never asks, see below) |
//! | `listen` | a watch of the key's deletions, from the last revision this handle saw |
//!
//! ## Stale breaking is etcd's, never a contender's
//!
//! The core breaks a lock it judges stale (an old stamp by its own wall
//! clock, or a stamp unchanged for `stale`). On etcd that judgement is the
//! lease's, made by the etcd leader: every observation [`EtcdBackend`]
//! reports has `breakable` set to `false`
//! ([`Observed::with_breakable`](heldlock_core::Observed::with_breakable)),
//! and the core's stale judge answers "fresh" for such a lock whatever its
//! stamp. A dead holder's lock therefore lasts until etcd expires its lease
//! (TTL after the last keep-alive) and deletes the key; the deletion wakes
//! the waiters' watches and one of them creates the key anew.
//!
//! The one other way the core breaks a lock is a host probe proving a
//! same-host holder dead. Do not give an etcd lock a host probe
//! (`Lock::with_host_probe`); the lock in the example above has none.
//!
//! ## TTL
//!
//! The lease's TTL is the `stale` age the holder declares in its record (the
//! core always writes it; [`EtcdBackend::with_default_ttl`] covers records
//! without one), rounded up to whole seconds since etcd counts TTLs in
//! seconds. etcd raises a TTL below its minimum, 1.5 × its election timeout
//! rounded up to a second (2 s with the default election timeout of 1 s);
//! [`Holding::ttl`] is what etcd granted. The core keeps its own, earlier
//! expiry on the holder's side (last successful refresh + `stale`), so
//! `lost()` fires no later than etcd deletes the key.
//!
//! ## Release on drop
//!
//! A guard dropped without `release().await` cannot wait for etcd: the core
//! warns that the backend cannot release on drop. When a tokio runtime is
//! current, the backend still revokes the guard's lease in a spawned task,
//! which deletes the key; otherwise the lease lapses after its TTL.
//!
//! ## Fencing token
//!
//! The create revision of the key is unique to one acquisition and grows
//! with every acquisition of every key of the cluster: a storage service
//! that remembers the highest revision it saw can refuse writes from an
//! older holder. The backend gives it to the core as the grant's fencing
//! token ([`LockBackend::fencing_token`](heldlock_core::LockBackend::fencing_token)),
//! so [`HeldLock::fencing_token`](heldlock_core::HeldLock::fencing_token)
//! returns it; [`EtcdBackend::create_revision`] gives it too. It is fixed
//! by the very transaction that creates the key, so no holder paused or
//! killed between two steps can reorder it.
//!
//! Revisions survive restarts (they are in etcd's data directory). A
//! cluster restored from a snapshot starts again at the snapshot's
//! revision: restore it with `etcdutl snapshot restore --bump-revision`
//! (and `--mark-compacted`), or tokens handed out after the snapshot may be
//! handed out again.
//!
//! ## Errors
//!
//! A failed request reaches the caller as
//! [`BackendError::Other`](heldlock_core::BackendError::Other) whose source is
//! an [`EtcdError`]: unreachable, timed out, refused credentials, bad
//! endpoint, each with what to check. Every request is bounded by the
//! request timeout (5 s by default), so a cluster that is down fails a step
//! instead of hanging it; the core bounds `acquire` by `max_wait` too.
//!
//! ## Runtime
//!
//! etcd-client runs on tokio: use this backend inside a tokio runtime with
//! its time driver on (`#[tokio::main]`, or a builder with `enable_all`),
//! and `heldlock_tokio::TokioRuntime` as the lock's runtime.
#![warn(missing_docs)]

mod backend;
mod error;
mod lock;
mod value;
mod watch;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions};
use heldlock_core::{LockRecord, OwnerId};

pub use error::EtcdError;
/// The etcd client crate this backend is built on, for [`ConnectOptions`]
/// and [`Client`].
pub use etcd_client;
pub use lock::EtcdLock;

/// Default of [`EtcdBackend::with_request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Default of [`EtcdBackend::with_default_ttl`].
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// A [`LockBackend`](heldlock_core::LockBackend) on one etcd key.
///
/// Each value is one *handle*: it owns the locks it created (their leases
/// and create revisions), as a process does. Another handle on the same key,
/// even one sharing the connection ([`peer`](Self::peer)), is a stranger to
/// them. See the [crate docs](crate) for how each step maps onto etcd.
///
/// # Examples
///
/// ```no_run
/// use heldlock_etcd::EtcdBackend;
///
/// # async fn demo() -> Result<(), heldlock_etcd::EtcdError> {
/// let backend = EtcdBackend::connect(&["http://127.0.0.1:2379"], "locks/db").await?;
/// assert_eq!(backend.key(), b"locks/db");
/// # Ok(())
/// # }
/// ```
pub struct EtcdBackend {
    client: Client,
    /// The endpoints as configured, for messages.
    at: Arc<str>,
    key: Arc<[u8]>,
    default_ttl: Duration,
    request_timeout: Duration,
    /// The locks this handle created and still holds, by owner.
    held: Mutex<HashMap<OwnerId, Held>>,
    /// Whether the last `try_create` found the key taken: then the next one
    /// looks first, so a waiter's tries cost a read instead of three writes.
    contended: AtomicBool,
    /// The highest store revision an answer on this connection showed
    /// (shared with [`peer`](Self::peer)s): a watch started after it misses
    /// no deletion that happened since.
    seen_revision: Arc<AtomicI64>,
}

/// A lock this handle holds, as etcd knows it.
///
/// # Examples
///
/// ```no_run
/// # async fn demo(backend: &heldlock_etcd::EtcdBackend, held: &heldlock_core::HeldLock) {
/// if let Some(holding) = backend.holding(held.owner()) {
///     println!("lease {:x}, TTL {:?}, token {}", holding.lease_id, holding.ttl, holding.create_revision);
/// }
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Holding {
    /// The key's create revision: unique to this acquisition, and greater
    /// than that of any earlier one (the fencing token).
    pub create_revision: i64,
    /// The etcd lease the key is bound to.
    pub lease_id: i64,
    /// The lease's TTL as etcd granted it.
    pub ttl: Duration,
}

/// What this handle keeps about a lock it holds.
#[derive(Clone, Debug)]
pub(crate) struct Held {
    /// Its `create_revision` is 0 while unknown: from the moment the
    /// creating transaction is sent until its answer is read (a
    /// `try_create` dropped in between leaves it so; see `resolve`).
    pub(crate) holding: Holding,
    pub(crate) record: LockRecord,
}

impl EtcdBackend {
    /// A backend on `key`, talking through `client`.
    ///
    /// Nothing is sent until the first step. Messages name the endpoints
    /// only when the backend was made by [`connect`](Self::connect).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), etcd_client::Error> {
    /// let client = etcd_client::Client::connect(["http://127.0.0.1:2379"], None).await?;
    /// let backend = heldlock_etcd::EtcdBackend::new(client, "locks/db");
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(client: Client, key: impl Into<Vec<u8>>) -> Self {
        Self::with_label(client, key.into(), "the client's endpoints".into())
    }

    fn with_label(client: Client, key: Vec<u8>, at: Arc<str>) -> Self {
        EtcdBackend {
            client,
            at,
            key: key.into(),
            default_ttl: DEFAULT_TTL,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            held: Mutex::new(HashMap::new()),
            contended: AtomicBool::new(false),
            seen_revision: Arc::new(AtomicI64::new(0)),
        }
    }

    /// Connects to `endpoints` (`http://host:port`) with a 5 s connect
    /// timeout and HTTP/2 keep-alives (so a dead connection is noticed), and
    /// checks that etcd answers a read of `key`.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), heldlock_etcd::EtcdError> {
    /// let backend = heldlock_etcd::EtcdBackend::connect(&["http://127.0.0.1:2379"], "locks/db").await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`EtcdError`] when an endpoint is malformed, etcd cannot be reached or
    /// does not answer within the request timeout, or refuses the read.
    pub async fn connect<E: AsRef<str>>(
        endpoints: &[E],
        key: impl Into<Vec<u8>>,
    ) -> Result<Self, EtcdError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(DEFAULT_REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(5), DEFAULT_REQUEST_TIMEOUT);
        Self::connect_with(endpoints, key, options).await
    }

    /// As [`connect`](Self::connect), with the client's options as given
    /// (credentials: [`ConnectOptions::with_user`]).
    ///
    /// ```no_run
    /// use heldlock_etcd::{EtcdBackend, etcd_client::ConnectOptions};
    ///
    /// # async fn demo() -> Result<(), heldlock_etcd::EtcdError> {
    /// let options = ConnectOptions::new().with_user("locker", "secret");
    /// let backend = EtcdBackend::connect_with(&["http://127.0.0.1:2379"], "locks/db", options).await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect); wrong credentials give
    /// [`EtcdError::Auth`].
    pub async fn connect_with<E: AsRef<str>>(
        endpoints: &[E],
        key: impl Into<Vec<u8>>,
        options: ConnectOptions,
    ) -> Result<Self, EtcdError> {
        let at: Arc<str> = endpoints
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<_>>()
            .join(",")
            .into();
        let endpoints: Vec<&str> = endpoints.iter().map(AsRef::as_ref).collect();
        // Connecting authenticates when credentials are given: a request.
        let client = bounded(
            &at,
            DEFAULT_REQUEST_TIMEOUT,
            "connect",
            Client::connect(endpoints, Some(options)),
        )
        .await?;
        let backend = Self::with_label(client, key.into(), at);
        let mut kv = backend.client.kv_client();
        let key = backend.key.to_vec();
        backend
            .call(
                "read the lock's key",
                kv.get(key, Some(GetOptions::new().with_count_only())),
            )
            .await?;
        Ok(backend)
    }

    /// The TTL of the leases of locks whose record declares no `stale` age
    /// (default 30 s). Locks made by the core always declare one.
    #[must_use]
    pub fn with_default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// How long one request to etcd may take before it fails with
    /// [`EtcdError::Timeout`] (default 5 s).
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Another handle on the same key over the same connection, holding
    /// nothing: to this handle's locks it is a stranger, as another process
    /// would be.
    pub fn peer(&self) -> Self {
        let mut peer = Self::with_label(self.client.clone(), self.key.to_vec(), self.at.clone());
        peer.default_ttl = self.default_ttl;
        peer.request_timeout = self.request_timeout;
        peer.seen_revision = Arc::clone(&self.seen_revision);
        peer
    }

    /// The lock's key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The etcd client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The lock `owner` holds through this handle: its create revision,
    /// lease and TTL. `None` once released or lost, and for other handles'
    /// locks.
    pub fn holding(&self, owner: &OwnerId) -> Option<Holding> {
        self.held_by(owner)
            .map(|held| held.holding)
            .filter(|holding| holding.create_revision != 0)
    }

    /// The create revision of the key `owner` holds through this handle:
    /// the lock's fencing token (see the [crate docs](crate#fencing-token)).
    ///
    /// ```no_run
    /// # async fn demo(backend: &heldlock_etcd::EtcdBackend, held: &heldlock_core::HeldLock) {
    /// let token = backend.create_revision(held.owner()).expect("held through this backend");
    /// # }
    /// ```
    pub fn create_revision(&self, owner: &OwnerId) -> Option<i64> {
        self.holding(owner).map(|h| h.create_revision)
    }

    // ---- for the step implementations ---------------------------------

    fn held_map(&self) -> std::sync::MutexGuard<'_, HashMap<OwnerId, Held>> {
        // The map holds plain data: a panic elsewhere leaves it consistent.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn held_by(&self, owner: &OwnerId) -> Option<Held> {
        self.held_map().get(owner).cloned()
    }

    pub(crate) fn keep(&self, owner: OwnerId, held: Held) {
        self.held_map().insert(owner, held);
    }

    pub(crate) fn forget(&self, owner: &OwnerId) -> Option<Held> {
        self.held_map().remove(owner)
    }

    /// Keeps a try's pending lock, unless `owner` holds one already
    /// (that one's try fails, and must not lose it).
    pub(crate) fn keep_try(&self, owner: &OwnerId, held: &Held) {
        let mut map = self.held_map();
        if map
            .get(owner)
            .is_none_or(|known| known.holding.create_revision == 0)
        {
            map.insert(owner.clone(), held.clone());
        }
    }

    /// Forgets the pending lock of the try that granted `lease_id`.
    pub(crate) fn forget_try(&self, owner: &OwnerId, lease_id: i64) {
        let mut map = self.held_map();
        if map
            .get(owner)
            .is_some_and(|known| known.holding.lease_id == lease_id)
        {
            map.remove(owner);
        }
    }

    /// Notes a response's store revision (see `seen_revision`).
    pub(crate) fn saw(&self, header: Option<&etcd_client::ResponseHeader>) {
        if let Some(header) = header {
            self.seen_revision
                .fetch_max(header.revision(), Ordering::AcqRel);
        }
    }

    /// `request`, bounded by the request timeout, its error sorted.
    pub(crate) async fn call<T>(
        &self,
        action: &'static str,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, EtcdError> {
        bounded(&self.at, self.request_timeout, action, request).await
    }

    /// Revokes `lease_id` in a task of the current tokio runtime, if there
    /// is one; its outcome matters to nobody (a lease left alone lapses).
    pub(crate) fn revoke_later(&self, lease_id: i64) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut lease = self.client.lease_client();
        let timeout = self.request_timeout;
        drop(runtime.spawn(async move {
            let _ = tokio::time::timeout(timeout, lease.revoke(lease_id)).await;
        }));
    }
}

/// `request` bounded by `timeout`: etcd-client waits for ever for a
/// connection to an endpoint that is down.
async fn bounded<T>(
    at: &str,
    timeout: Duration,
    action: &'static str,
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, EtcdError> {
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(EtcdError::classify(at, action, error)),
        Err(_) => Err(EtcdError::Timeout {
            at: at.to_owned(),
            action,
            timeout,
        }),
    }
}

impl fmt::Debug for EtcdBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdBackend")
            .field("at", &self.at)
            .field("key", &String::from_utf8_lossy(&self.key))
            .field("default_ttl", &self.default_ttl)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}
