//! `Faulty`: `MemoryBackend` with change notifications and one deliberate
//! fault, to show that the suite catches each fault (see `broken.rs`).

use std::future::poll_fn;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Poll, Waker};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::executor::block_on;
use heldlock_conformance::{Capabilities, Report, Resource, SharedClones, run_all};
use heldlock_core::{
    BackendError, Broke, ChangeListener, Created, Holder, Identity, Inspection, LockBackend,
    LockRecord, MemoryBackend, Observed, OwnerId, Refreshed, Released,
};

/// One way to get the contract wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// `release` and `release_blocking` remove whatever lock is there.
    ReleaseIgnoresOwner,
    /// `break_if_unchanged` removes whatever lock is there.
    BreakIgnoresObservation,
    /// `refresh` re-stamps whatever lock is there.
    RefreshIgnoresOwner,
    /// `refresh` says `Refreshed` but does not move the stamp.
    RefreshKeepsStamp,
    /// `try_create` overwrites an existing lock.
    CreateOverwrites,
    /// Identities name the content, not the instance (a copied record with
    /// the same stamp looks like the same lock).
    IdentityByContent,
    /// The record read back loses its `key=value` fields.
    DropsFields,
    /// `inspect` reports a lock where there is none.
    InspectInventsALock,
    /// `release` by the owner says `Released` but leaves the lock in place.
    ReleaseKeepsTheLock,
    /// `refresh` of a released lock says `Refreshed`.
    RefreshRevivesAReleasedLock,
    /// `break_if_unchanged` never breaks, even the very lock observed.
    BreakNeverBreaks,
    /// `break_if_unchanged` with no lock there says `Broken`.
    BreakOfNothingSaysBroken,
    /// `listen` returns a listener that never completes.
    ListenNeverFires,
    /// A listener subscribes at its first poll, not when `listen` is
    /// called: a release in between is lost.
    ListenSubscribesLate,
    /// A break does not wake listeners (a release does).
    ListenMissesBreak,
    /// `try_create` puts a placeholder lock in place, awaits, then writes
    /// the record: dropped at that await, it leaves a lock nobody owns.
    CreateNotCancelSafe,
    /// `release` marks the lock as being released (a lock nobody owns),
    /// awaits, then removes it: dropped at that await, the mark stays.
    ReleaseNotCancelSafe,
}

/// Every fault, for the test that every check catches one.
pub(crate) const FAULTS: [Fault; 17] = [
    Fault::ReleaseIgnoresOwner,
    Fault::BreakIgnoresObservation,
    Fault::RefreshIgnoresOwner,
    Fault::RefreshKeepsStamp,
    Fault::CreateOverwrites,
    Fault::IdentityByContent,
    Fault::DropsFields,
    Fault::InspectInventsALock,
    Fault::ReleaseKeepsTheLock,
    Fault::RefreshRevivesAReleasedLock,
    Fault::BreakNeverBreaks,
    Fault::BreakOfNothingSaysBroken,
    Fault::ListenNeverFires,
    Fault::ListenSubscribesLate,
    Fault::ListenMissesBreak,
    Fault::CreateNotCancelSafe,
    Fault::ReleaseNotCancelSafe,
];

/// What `Faulty` claims: everything it offers. Listeners of the fault-free
/// `Faulty` complete at once, so a short wait is plenty.
pub(crate) const CAPABILITIES: Capabilities = Capabilities::new()
    .with_release_blocking(true)
    .with_listen(true)
    .with_notify_within(Duration::from_millis(100));

/// Runs the whole suite on `Faulty` with `fault` (`None`: no fault).
pub(crate) fn run(fault: Option<Fault>) -> Report {
    let factory = move || -> Result<Box<dyn Resource>, BackendError> {
        Ok(Box::new(SharedClones(Faulty::new(fault))))
    };
    block_on(run_all(&factory, CAPABILITIES))
}

/// `MemoryBackend` with change notifications, and at most one fault.
#[derive(Clone, Debug)]
pub(crate) struct Faulty {
    inner: MemoryBackend,
    fault: Option<Fault>,
    /// Shared by clones, as the lock is.
    bell: Arc<Bell>,
}

impl Faulty {
    pub(crate) fn new(fault: Option<Fault>) -> Self {
        Faulty {
            inner: MemoryBackend::new(format!("{fault:?}")),
            fault,
            bell: Arc::default(),
        }
    }

    fn has(&self, fault: Fault) -> bool {
        self.fault == Some(fault)
    }

    /// Removes any lock: `Released` where the real backend says `NotOurs`.
    fn release_any(&self, owner: &OwnerId) -> Result<Released, BackendError> {
        match self.inner.release_blocking(owner) {
            Some(Ok(Released::NotOurs)) => {
                self.inner.remove();
                Ok(Released::Released)
            }
            Some(other) => other,
            None => unreachable!("MemoryBackend releases without awaiting"),
        }
    }

    async fn present(&self) -> Result<Option<Observed>, BackendError> {
        Ok(match self.inner.inspect().await? {
            Inspection::Present(observed) => Some(observed),
            _ => None,
        })
    }

    fn distort(&self, mut observed: Observed) -> Observed {
        match self.fault {
            Some(Fault::IdentityByContent) => {
                observed.identity = Identity::new(b"content".to_vec());
            }
            Some(Fault::DropsFields) => {
                if let Holder::Record(record) = &mut observed.holder {
                    record.fields.clear();
                }
            }
            _ => {}
        }
        observed
    }

    /// Wakes the listeners after a successful release.
    fn released(&self, result: Result<Released, BackendError>) -> Result<Released, BackendError> {
        if matches!(result, Ok(Released::Released)) {
            self.bell.ring();
        }
        result
    }

    async fn break_now(&self, observed: &Observed) -> Result<Broke, BackendError> {
        let Some(current) = self.present().await? else {
            return Ok(if self.has(Fault::BreakOfNothingSaysBroken) {
                Broke::Broken
            } else {
                Broke::Absent
            });
        };
        match self.fault {
            Some(Fault::BreakNeverBreaks) => Ok(Broke::Changed),
            Some(Fault::BreakIgnoresObservation) => {
                self.inner.remove();
                Ok(Broke::Broken)
            }
            // Compare as the faulty identity sees it, then break what is there.
            Some(Fault::IdentityByContent | Fault::DropsFields) => {
                if self.distort(current.clone()) == *observed {
                    self.inner.break_if_unchanged(&current).await
                } else {
                    Ok(Broke::Changed)
                }
            }
            _ => self.inner.break_if_unchanged(observed).await,
        }
    }

    async fn release_now(&self, owner: &OwnerId) -> Result<Released, BackendError> {
        match self.fault {
            Some(Fault::ReleaseIgnoresOwner) => self.release_any(owner),
            Some(Fault::ReleaseKeepsTheLock) => Ok(Released::Released),
            Some(Fault::ReleaseNotCancelSafe) => {
                let released = self.inner.release(owner).await?;
                if released == Released::Released {
                    let mark = Holder::Foreign {
                        summary: "being released".into(),
                    };
                    self.inner.replace(mark, SystemTime::UNIX_EPOCH);
                    yield_now().await;
                    self.inner.remove();
                }
                Ok(released)
            }
            _ => self.inner.release(owner).await,
        }
    }
}

#[async_trait]
impl LockBackend for Faulty {
    fn resource(&self) -> String {
        self.inner.resource()
    }

    async fn try_create(&self, record: &LockRecord) -> Result<Created, BackendError> {
        if self.has(Fault::CreateOverwrites) {
            self.inner.remove();
        }
        if self.has(Fault::CreateNotCancelSafe) {
            if self.present().await?.is_some() {
                return Ok(Created::Exists);
            }
            let placeholder = Holder::Foreign {
                summary: "being created".into(),
            };
            self.inner.replace(placeholder, record.acquired_at);
            yield_now().await;
            self.inner.remove();
        }
        self.inner.try_create(record).await
    }

    async fn inspect(&self) -> Result<Inspection, BackendError> {
        Ok(match self.inner.inspect().await? {
            Inspection::Present(observed) => Inspection::Present(self.distort(observed)),
            Inspection::Absent if self.has(Fault::InspectInventsALock) => {
                Inspection::Present(Observed::new(
                    Holder::Foreign {
                        summary: "invented".into(),
                    },
                    Identity::new(b"invented".to_vec()),
                    SystemTime::UNIX_EPOCH,
                ))
            }
            other => other,
        })
    }

    async fn refresh(&self, owner: &OwnerId, now: SystemTime) -> Result<Refreshed, BackendError> {
        match self.fault {
            Some(Fault::RefreshIgnoresOwner) if self.present().await?.is_some() => {
                self.inner.set_refreshed_at(now);
                Ok(Refreshed::Refreshed)
            }
            Some(Fault::RefreshKeepsStamp) => {
                let ours = self
                    .present()
                    .await?
                    .is_some_and(|o| o.holder.record().is_some_and(|r| &r.owner == owner));
                Ok(if ours {
                    Refreshed::Refreshed
                } else {
                    Refreshed::Lost
                })
            }
            Some(Fault::RefreshRevivesAReleasedLock) if self.present().await?.is_none() => {
                Ok(Refreshed::Refreshed)
            }
            _ => self.inner.refresh(owner, now).await,
        }
    }

    async fn break_if_unchanged(&self, observed: &Observed) -> Result<Broke, BackendError> {
        let broke = self.break_now(observed).await;
        if matches!(broke, Ok(Broke::Broken)) && !self.has(Fault::ListenMissesBreak) {
            self.bell.ring();
        }
        broke
    }

    async fn release(&self, owner: &OwnerId) -> Result<Released, BackendError> {
        self.released(self.release_now(owner).await)
    }

    fn release_blocking(&self, owner: &OwnerId) -> Option<Result<Released, BackendError>> {
        let result = match self.fault {
            Some(Fault::ReleaseIgnoresOwner) => self.release_any(owner),
            Some(Fault::ReleaseKeepsTheLock) => Ok(Released::Released),
            _ => self.inner.release_blocking(owner)?,
        };
        Some(self.released(result))
    }

    fn listen(&self) -> Option<ChangeListener> {
        let bell = Arc::clone(&self.bell);
        // Subscribed now (the contract), or at the first poll (the fault).
        let mut since = (!self.has(Fault::ListenSubscribesLate)).then(|| bell.rings());
        if self.has(Fault::ListenNeverFires) {
            return Some(Box::pin(std::future::pending()));
        }
        Some(Box::pin(poll_fn(move |task| {
            let since = *since.get_or_insert_with(|| bell.rings());
            if bell.rung_since(since, task.waker()) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })))
    }
}

/// Counts releases and breaks, and wakes the listeners waiting for one.
#[derive(Debug, Default)]
struct Bell {
    state: Mutex<(u64, Vec<Waker>)>,
}

impl Bell {
    fn state(&self) -> std::sync::MutexGuard<'_, (u64, Vec<Waker>)> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn rings(&self) -> u64 {
        self.state().0
    }

    fn ring(&self) {
        let wakers = {
            let mut state = self.state();
            state.0 += 1;
            std::mem::take(&mut state.1)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Whether it rang after `since` rings; if not, `waker` is woken when it
    /// does.
    fn rung_since(&self, since: u64, waker: &Waker) -> bool {
        let mut state = self.state();
        if state.0 > since {
            return true;
        }
        state.1.push(waker.clone());
        false
    }
}

/// Returns `Pending` once (asking to be polled again), then completes: an
/// await point where a step can be dropped.
async fn yield_now() {
    let mut yielded = false;
    poll_fn(|task| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            task.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await;
}
