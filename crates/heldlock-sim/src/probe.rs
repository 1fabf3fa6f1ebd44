//! [`Probe`]: a transparent [`LockBackend`] wrapper that tells the checker
//! when each backend call of a contender begins and what it returned. It
//! changes nothing: every call goes to the contender's own `FsBackend`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use heldlock_core::{
    BackendError, Broke, Created, Inspection, LockBackend, LockRecord, Observed, OwnerId,
    Refreshed, Released,
};
use heldlock_fs::FsBackend;

use crate::check::{Call, CallKind};
use crate::fs::SimFs;
use crate::world::World;

/// See the [module docs](self).
pub(crate) struct Probe {
    inner: FsBackend<SimFs>,
    world: Arc<World>,
    contender: usize,
    /// A test of the checker: look and break as `heldlock break --force`
    /// does, which takes a file it cannot read for a breakable lock.
    force: bool,
}

impl Probe {
    pub(crate) fn new(
        inner: FsBackend<SimFs>,
        world: Arc<World>,
        contender: usize,
        force: bool,
    ) -> Self {
        Probe {
            inner,
            world,
            contender,
            force,
        }
    }

    fn begin(&self, kind: CallKind) -> Option<u64> {
        let mut st = self.world.lock();
        let task = st.current?.task;
        let now = st.now;
        st.obs.begin_call(task, kind, self.contender, now);
        Some(task)
    }

    fn end(&self, task: Option<u64>, ok: bool, what: impl FnOnce() -> String) -> Option<Call> {
        let mut st = self.world.lock();
        let call = task.and_then(|t| st.obs.end_call(t))?;
        st.check_call_trash(&call, ok);
        if st.trace.enabled() {
            let text = what();
            st.note(&format!("=> {text}"));
        }
        Some(call)
    }
}

impl fmt::Debug for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Probe")
            .field("contender", &self.contender)
            .finish_non_exhaustive()
    }
}

fn shown<T: fmt::Debug>(result: &Result<T, BackendError>) -> String {
    match result {
        Ok(value) => format!("{value:?}"),
        Err(error) => format!("error: {error}"),
    }
}

/// The future of one backend call, as `#[async_trait]` spells it (written
/// out here so that the simulator needs no macro crate).
type Step<'a, T> = Pin<Box<dyn Future<Output = Result<T, BackendError>> + Send + 'a>>;

impl LockBackend for Probe {
    fn resource(&self) -> String {
        self.inner.resource()
    }

    fn try_create<'s, 'r, 'a>(&'s self, record: &'r LockRecord) -> Step<'a, Created>
    where
        's: 'a,
        'r: 'a,
        Self: 'a,
    {
        Box::pin(async move {
            let task = self.begin(CallKind::TryCreate);
            let result = self.inner.try_create(record).await;
            let call = self.end(task, result.is_ok(), || {
                format!("try_create: {}", shown(&result))
            });
            if let (Ok(Created::Created), Some(call)) = (&result, call) {
                let mut st = self.world.lock();
                st.obs.bump("acquired");
                if let Some(label) = st.new_hold(self.contender, record.owner.as_str(), &call) {
                    st.note(&format!("holds the lock as {label}"));
                }
            }
            result
        })
    }

    fn inspect<'s, 'a>(&'s self) -> Step<'a, Inspection>
    where
        's: 'a,
        Self: 'a,
    {
        Box::pin(async move {
            let task = self.begin(CallKind::Inspect);
            let result = if self.force {
                match self.inner.inspect_anything().await {
                    Ok(Inspection::Present(o)) => Ok(Inspection::Present(o.with_breakable(true))),
                    other => other,
                }
            } else {
                self.inner.inspect().await
            };
            self.end(task, result.is_ok(), || match &result {
                Ok(Inspection::Absent) => "inspect: Absent".to_owned(),
                Ok(Inspection::Present(o)) => format!("inspect: {}", o.holder),
                Ok(other) => format!("inspect: {other:?}"),
                Err(e) => format!("inspect: error: {e}"),
            });
            result
        })
    }

    fn refresh<'s, 'o, 'a>(&'s self, owner: &'o OwnerId, now: SystemTime) -> Step<'a, Refreshed>
    where
        's: 'a,
        'o: 'a,
        Self: 'a,
    {
        Box::pin(async move {
            let task = self.begin(CallKind::Refresh);
            let result = self.inner.refresh(owner, now).await;
            let call = self.end(task, result.is_ok(), || {
                format!("refresh: {}", shown(&result))
            });
            let mut st = self.world.lock();
            match (&result, call) {
                (Ok(refreshed), Some(call)) => {
                    st.check_refresh(owner.as_str(), &call, *refreshed == Refreshed::Refreshed);
                }
                (Err(_), _) => st.refresh_failed(owner.as_str()),
                _ => {}
            }
            drop(st);
            result
        })
    }

    fn break_if_unchanged<'s, 'o, 'a>(&'s self, observed: &'o Observed) -> Step<'a, Broke>
    where
        's: 'a,
        'o: 'a,
        Self: 'a,
    {
        Box::pin(async move {
            let task = self.begin(CallKind::Break);
            let result = if self.force {
                self.inner.break_anything(observed).await
            } else {
                self.inner.break_if_unchanged(observed).await
            };
            self.end(task, result.is_ok(), || {
                format!("break_if_unchanged: {}", shown(&result))
            });
            if let Ok(broke) = &result {
                self.world.lock().obs.bump(&format!("break.{broke:?}"));
            }
            result
        })
    }

    fn release<'s, 'o, 'a>(&'s self, owner: &'o OwnerId) -> Step<'a, Released>
    where
        's: 'a,
        'o: 'a,
        Self: 'a,
    {
        Box::pin(async move {
            self.world.lock().end_hold(owner.as_str());
            let task = self.begin(CallKind::Release);
            let result = self.inner.release(owner).await;
            self.end(task, result.is_ok(), || {
                format!("release: {}", shown(&result))
            });
            if let Ok(released) = &result {
                self.world.lock().obs.bump(&format!("release.{released:?}"));
            }
            result
        })
    }

    fn release_blocking(&self, owner: &OwnerId) -> Option<Result<Released, BackendError>> {
        self.inner.release_blocking(owner)
    }
}
