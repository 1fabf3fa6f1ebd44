//! `EtcdLock`: the held lock on one etcd key, as `FileLock` is on one file.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use etcd_client::ConnectOptions;
use heldlock_core::{
    BackendError, Error, HeldLock, Inspection, Lock, LockOptions, LockState, Runtime, Step, Timing,
};

use crate::{EtcdBackend, EtcdError};

/// A held lock on one etcd key: the core's [`Lock`] over an
/// [`EtcdBackend`], named by endpoints and key as a `FileLock` is named by
/// its path.
///
/// Every grant has a fencing token ([`HeldLock::fencing_token`]: the key's
/// create revision). The waiters of one process take turns among
/// themselves first (`Lock::queue_in_process`), so only one of them watches
/// the key; no host probe is given (etcd's lease alone decides that a
/// holder is dead, see the [crate docs](crate)).
///
/// `R` is the runtime that gives the lock its clock and runs its
/// heartbeat. etcd-client runs on tokio, so `R` must be a runtime on tokio:
/// the facade names it (`heldlock::etcd::EtcdLock`, on
/// `heldlock_tokio::TokioRuntime`).
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use heldlock_core::LockOptions;
/// use heldlock_tokio::TokioRuntime;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), heldlock_core::Error> {
/// type EtcdLock = heldlock_etcd::EtcdLock<TokioRuntime>;
///
/// let lock = EtcdLock::connect(&["http://127.0.0.1:2379"], "locks/db", LockOptions::new(Duration::from_secs(10))).await?;
/// let held = lock.acquire().await?;
/// let token = held.fencing_token().expect("etcd gives every grant a token");
/// if held.refresh().await? {
///     println!("still ours: write, carrying token {token}");
/// }
/// held.release().await?;
/// # Ok(())
/// # }
/// ```
pub struct EtcdLock<R> {
    lock: Lock,
    backend: Arc<EtcdBackend>,
    runtime: PhantomData<fn() -> R>,
}

impl<R: Runtime + Default> EtcdLock<R> {
    /// Connects to `endpoints` (`http://host:port`; see
    /// [`EtcdBackend::connect`]) and makes a lock on `key`. `options.stale`
    /// is the TTL of each grant's etcd lease (rounded up to whole seconds,
    /// and raised to etcd's minimum by etcd).
    ///
    /// # Errors
    ///
    /// [`Error::Options`] for invalid options and
    /// [`Error::InvalidResource`] for an empty key, both before anything is
    /// sent; [`Error::Backend`] (step `prepare`) when etcd cannot be
    /// reached or refuses: its source is an [`EtcdError`] that says what
    /// to check.
    pub async fn connect<E: AsRef<str>>(
        endpoints: &[E],
        key: impl Into<Vec<u8>>,
        options: LockOptions,
    ) -> Result<Self, Error> {
        let key = checked(key.into(), &options)?;
        let backend = EtcdBackend::connect(endpoints, key.clone())
            .await
            .map_err(|error| connect_error(endpoints, &key, error))?;
        Self::new(backend, options)
    }

    /// As [`connect`](Self::connect), with the client's options as given
    /// (credentials: [`ConnectOptions::with_user`]).
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect); refused credentials give an
    /// [`EtcdError::Auth`] source.
    pub async fn connect_with<E: AsRef<str>>(
        endpoints: &[E],
        key: impl Into<Vec<u8>>,
        options: LockOptions,
        connect: ConnectOptions,
    ) -> Result<Self, Error> {
        let key = checked(key.into(), &options)?;
        let backend = EtcdBackend::connect_with(endpoints, key.clone(), connect)
            .await
            .map_err(|error| connect_error(endpoints, &key, error))?;
        Self::new(backend, options)
    }

    /// A lock over `backend` (made with any of its constructors: a client
    /// of your own, a request timeout, a default TTL).
    ///
    /// # Errors
    ///
    /// [`Error::Options`] for invalid options; [`Error::InvalidResource`]
    /// for an empty key.
    pub fn new(backend: EtcdBackend, options: LockOptions) -> Result<Self, Error> {
        Self::with_runtime(backend, options, R::default())
    }
}

impl<R: Runtime> EtcdLock<R> {
    /// As [`new`](Self::new), with an explicit runtime value.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn with_runtime(
        backend: EtcdBackend,
        options: LockOptions,
        runtime: R,
    ) -> Result<Self, Error> {
        checked(backend.key().to_vec(), &options)?;
        let backend = Arc::new(backend);
        let lock = Lock::new(backend.clone(), Arc::new(runtime), options)?.queue_in_process(true);
        Ok(EtcdLock {
            lock,
            backend,
            runtime: PhantomData,
        })
    }

    /// The backend: the key, the client, and what etcd knows of a lock it
    /// holds ([`EtcdBackend::holding`]).
    pub fn backend(&self) -> &Arc<EtcdBackend> {
        &self.backend
    }

    /// The lock's key.
    pub fn key(&self) -> &[u8] {
        self.backend.key()
    }

    /// The validated timings.
    pub fn timing(&self) -> Timing {
        self.lock.timing()
    }

    /// The runtime-agnostic lock underneath.
    pub fn as_lock(&self) -> &Lock {
        &self.lock
    }

    /// Waits up to `max_wait` for the lock (woken by a watch of the key);
    /// see [`Lock::acquire`].
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] naming the key, the holder and the time waited;
    /// [`Error::Backend`] when a request to etcd failed (its source is an
    /// [`EtcdError`]).
    pub async fn acquire(&self) -> Result<HeldLock, Error> {
        self.lock.acquire().await
    }

    /// Tries once without waiting; see [`Lock::try_acquire`].
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when a request to etcd failed.
    pub async fn try_acquire(&self) -> Result<Option<HeldLock>, Error> {
        self.lock.try_acquire().await
    }

    /// Runs `task` under the lock, or unlocked (best effort) when the lock
    /// cannot be had; see [`Lock::with_lock`].
    pub async fn with_lock<F, Fut, T>(&self, task: F) -> T
    where
        F: FnOnce(LockState) -> Fut,
        Fut: Future<Output = T>,
    {
        self.lock.with_lock(task).await
    }

    /// Looks at the key without touching it.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when etcd could not be read.
    pub async fn inspect(&self) -> Result<Inspection, Error> {
        self.lock.inspect().await
    }
}

impl<R> Clone for EtcdLock<R> {
    fn clone(&self) -> Self {
        EtcdLock {
            lock: self.lock.clone(),
            backend: Arc::clone(&self.backend),
            runtime: PhantomData,
        }
    }
}

impl<R> fmt::Debug for EtcdLock<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdLock")
            .field("backend", &self.backend)
            .field("timing", &self.lock.timing())
            .finish()
    }
}

/// `key`, once it and `options` are known to be usable.
fn checked(key: Vec<u8>, options: &LockOptions) -> Result<Vec<u8>, Error> {
    options.validate()?;
    if key.is_empty() {
        return Err(Error::InvalidResource {
            resource: String::new(),
            reason: "the etcd key is empty; name the lock, e.g. locks/db".into(),
        });
    }
    Ok(key)
}

/// A failed connection as the core's error, named as the lock's steps name
/// their resource.
fn connect_error<E: AsRef<str>>(endpoints: &[E], key: &[u8], error: EtcdError) -> Error {
    let at: Vec<&str> = endpoints.iter().map(AsRef::as_ref).collect();
    Error::Backend(BackendError::Other {
        step: Step::Prepare,
        resource: format!(
            "`{}` on etcd at {}",
            String::from_utf8_lossy(key),
            at.join(",")
        ),
        source: Box::new(error),
    })
}
