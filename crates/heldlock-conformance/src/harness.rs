//! The machinery the checks share: one fresh resource, stamps, records, and
//! "do a step, compare with what the contract requires" helpers that turn
//! every surprise into a [`Failure`] naming the check and the step.

use std::fmt::Debug;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use heldlock_core::{
    BackendError, Broke, Created, Holder, Inspection, LockBackend, LockRecord, Observed, OwnerId,
    Refreshed, Released,
};

use crate::capabilities::{Capabilities, STAMP_STEP};
use crate::factory::{BackendFactory, Resource};
use crate::report::Failure;

/// A boxed, sendable future, as the check table and the join helper store them.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Made-up process ids for the simulated processes. Backends store a pid but
/// never judge it (liveness is core policy), so any value works; distinct
/// values make a record that a backend mixed up visible in messages.
pub(crate) const PID_A: u32 = 4101;
pub(crate) const PID_B: u32 = 4102;
pub(crate) const PID_RACERS: u32 = 4200;

/// One check's context: its name, the declared capabilities, its own fresh
/// resource and the time its stamps start from.
pub(crate) struct Cx {
    check: &'static str,
    caps: Capabilities,
    resource: Box<dyn Resource>,
    t0: SystemTime,
}

impl Cx {
    /// Validates the capabilities and makes the check's fresh resource.
    pub(crate) fn new(
        check: &'static str,
        factory: &dyn BackendFactory,
        caps: Capabilities,
    ) -> Result<Self, Failure> {
        if caps.stamp_tolerance >= STAMP_STEP / 2 {
            return Err(Failure::Misconfigured {
                check,
                problem: format!(
                    "stamp_tolerance {:?} cannot tell apart stamps {:?} apart; it must be below {:?}",
                    caps.stamp_tolerance,
                    STAMP_STEP,
                    STAMP_STEP / 2
                ),
            });
        }
        let resource = factory.fresh().map_err(|error| Failure::Backend {
            check,
            step: "make a fresh resource (BackendFactory::fresh)".into(),
            error,
        })?;
        Ok(Cx {
            check,
            caps,
            resource,
            t0: base_time(),
        })
    }

    /// The declared capabilities.
    pub(crate) fn caps(&self) -> Capabilities {
        self.caps
    }

    /// A new handle on the resource, acting as the process `who`.
    pub(crate) fn open(&self, who: &str) -> Result<Arc<dyn LockBackend>, Failure> {
        self.resource.open().map_err(|error| Failure::Backend {
            check: self.check,
            step: format!("open a handle for {who} (Resource::open)"),
            error,
        })
    }

    /// The `n`-th stamp of the check: `t0 + n * STAMP_STEP`.
    pub(crate) fn at(&self, n: u32) -> SystemTime {
        self.t0 + STAMP_STEP * n
    }

    /// A record with a fresh owner id, stamped `at`, with two fields, so that a
    /// backend that drops or reorders fields is caught.
    pub(crate) fn record(&self, pid: u32, at: SystemTime) -> LockRecord {
        LockRecord::new(pid, OwnerId::random(), at)
            .with_fields([("host", "conformance.invalid"), ("check", self.check)])
    }

    // ---- failures ----------------------------------------------------------

    /// The check cannot go on for a reason that is not the backend's answer
    /// (the suite itself could not do something).
    pub(crate) fn cannot_run(&self, problem: String) -> Failure {
        Failure::Misconfigured {
            check: self.check,
            problem,
        }
    }

    pub(crate) fn mismatch(&self, step: &str, expected: String, found: String) -> Failure {
        Failure::Mismatch {
            check: self.check,
            step: step.to_owned(),
            expected,
            found,
        }
    }

    pub(crate) fn ok<T>(&self, step: &str, result: Result<T, BackendError>) -> Result<T, Failure> {
        result.map_err(|error| Failure::Backend {
            check: self.check,
            step: step.to_owned(),
            error,
        })
    }

    pub(crate) fn expect<T: PartialEq + Debug>(
        &self,
        step: &str,
        expected: T,
        found: T,
    ) -> Result<(), Failure> {
        if expected == found {
            Ok(())
        } else {
            Err(self.mismatch(step, format!("{expected:?}"), format!("{found:?}")))
        }
    }

    // ---- steps with their expected outcome ---------------------------------

    /// Peer A (`handle`) creates the free lock with its record stamped at
    /// the start of the check's clock, as most checks begin; that record.
    pub(crate) async fn a_creates(&self, handle: &dyn LockBackend) -> Result<LockRecord, Failure> {
        let record = self.record(PID_A, self.at(0));
        self.try_create(handle, &record, Created::Created, "A's try_create")
            .await?;
        Ok(record)
    }

    pub(crate) async fn try_create(
        &self,
        handle: &dyn LockBackend,
        record: &LockRecord,
        expected: Created,
        step: &str,
    ) -> Result<(), Failure> {
        let found = self.ok(step, handle.try_create(record).await)?;
        self.expect(step, expected, found)
    }

    pub(crate) async fn refresh(
        &self,
        handle: &dyn LockBackend,
        owner: &OwnerId,
        now: SystemTime,
        expected: Refreshed,
        step: &str,
    ) -> Result<(), Failure> {
        let found = self.ok(step, handle.refresh(owner, now).await)?;
        self.expect(step, expected, found)
    }

    pub(crate) async fn break_if_unchanged(
        &self,
        handle: &dyn LockBackend,
        observed: &Observed,
        expected: Broke,
        step: &str,
    ) -> Result<(), Failure> {
        let found = self.ok(step, handle.break_if_unchanged(observed).await)?;
        self.expect(step, expected, found)
    }

    pub(crate) async fn release(
        &self,
        handle: &dyn LockBackend,
        owner: &OwnerId,
        expected: Released,
        step: &str,
    ) -> Result<(), Failure> {
        let found = self.ok(step, handle.release(owner).await)?;
        self.expect(step, expected, found)
    }

    /// Calls `release_blocking`, which must be supported.
    pub(crate) fn release_blocking(
        &self,
        handle: &dyn LockBackend,
        owner: &OwnerId,
        expected: Released,
        step: &str,
    ) -> Result<(), Failure> {
        match handle.release_blocking(owner) {
            None => Err(self.mismatch(
                step,
                format!("Some(Ok({expected:?})), since Capabilities::release_blocking is claimed"),
                "None (release_blocking not supported)".into(),
            )),
            Some(result) => {
                let found = self.ok(step, result)?;
                self.expect(step, expected, found)
            }
        }
    }

    // ---- inspections -------------------------------------------------------

    pub(crate) async fn inspect(
        &self,
        handle: &dyn LockBackend,
        step: &str,
    ) -> Result<Inspection, Failure> {
        self.ok(step, handle.inspect().await)
    }

    /// Inspects and requires no lock.
    pub(crate) async fn absent(&self, handle: &dyn LockBackend, step: &str) -> Result<(), Failure> {
        match self.inspect(handle, step).await? {
            Inspection::Absent => Ok(()),
            Inspection::Present(found) => Err(self.mismatch(
                step,
                "Absent".into(),
                format!("Present({})", self.show_observed(&found)),
            )),
            other => Err(self.mismatch(step, "Absent".into(), format!("{other:?}"))),
        }
    }

    /// Inspects and requires a lock holding `record` (the content written,
    /// stamps within the declared tolerance) last refreshed at `stamp`.
    pub(crate) async fn present(
        &self,
        handle: &dyn LockBackend,
        record: &LockRecord,
        stamp: SystemTime,
        step: &str,
    ) -> Result<Observed, Failure> {
        let expected = || {
            format!(
                "Present(held by {}, refreshed {})",
                self.show_record(record),
                self.show_time(stamp)
            )
        };
        let observed = match self.inspect(handle, step).await? {
            Inspection::Present(observed) => observed,
            other => return Err(self.mismatch(step, expected(), format!("{other:?}"))),
        };
        let mut differs = match observed.holder.record() {
            Some(found) => self.record_differences(record, found),
            None => vec!["holder (not a record)"],
        };
        if !self.close(observed.refreshed_at, stamp) {
            differs.push("refreshed_at");
        }
        if differs.is_empty() {
            return Ok(observed);
        }
        Err(self.mismatch(
            step,
            expected(),
            format!(
                "Present({}), which differs in {}",
                self.show_observed(&observed),
                differs.join(", ")
            ),
        ))
    }

    /// Inspects and requires exactly the lock observed `before`: same holder,
    /// same identity, same stamp. Exact, because `break_if_unchanged` compares
    /// observations exactly.
    pub(crate) async fn unchanged(
        &self,
        handle: &dyn LockBackend,
        before: &Observed,
        step: &str,
    ) -> Result<(), Failure> {
        let found = self.inspect(handle, step).await?;
        self.judge_unchanged(before, found, false, step)
    }

    /// As [`unchanged`](Self::unchanged), but no lock is fine too: from
    /// one look, since a network backend may still apply a step dropped in
    /// flight, and the lock may go between two looks.
    pub(crate) async fn unchanged_or_absent(
        &self,
        handle: &dyn LockBackend,
        before: &Observed,
        step: &str,
    ) -> Result<(), Failure> {
        let found = self.inspect(handle, step).await?;
        self.judge_unchanged(before, found, true, step)
    }

    fn judge_unchanged(
        &self,
        before: &Observed,
        found: Inspection,
        absent_is_fine: bool,
        step: &str,
    ) -> Result<(), Failure> {
        let or_absent = if absent_is_fine { ", or Absent" } else { "" };
        let expected = || {
            format!(
                "unchanged Present({}){or_absent}",
                self.show_observed(before)
            )
        };
        match found {
            Inspection::Present(found) if found == *before => Ok(()),
            Inspection::Absent if absent_is_fine => Ok(()),
            Inspection::Present(found) => Err(self.mismatch(
                step,
                expected(),
                format!("Present({})", self.show_observed(&found)),
            )),
            other => Err(self.mismatch(step, expected(), format!("{other:?}"))),
        }
    }

    // ---- comparisons and descriptions --------------------------------------

    pub(crate) fn close(&self, a: SystemTime, b: SystemTime) -> bool {
        let gap = a
            .duration_since(b)
            .or_else(|_| b.duration_since(a))
            .unwrap_or(Duration::MAX);
        gap <= self.caps.stamp_tolerance
    }

    /// The parts of `read` that differ from `written`, named for messages.
    fn record_differences(&self, written: &LockRecord, read: &LockRecord) -> Vec<&'static str> {
        let mut differs = Vec::new();
        if written.pid != read.pid {
            differs.push("pid");
        }
        if written.owner != read.owner {
            differs.push("owner");
        }
        if !self.close(written.acquired_at, read.acquired_at) {
            differs.push("acquired_at");
        }
        if written.fields != read.fields {
            differs.push("fields");
        }
        differs
    }

    /// A stamp relative to the check's start, e.g. `t0+10s`.
    pub(crate) fn show_time(&self, t: SystemTime) -> String {
        match t.duration_since(self.t0) {
            Ok(Duration::ZERO) => "t0".to_owned(),
            Ok(after) => format!("t0+{after:?}"),
            Err(before) => format!("t0-{:?}", before.duration()),
        }
    }

    pub(crate) fn show_record(&self, r: &LockRecord) -> String {
        let fields: Vec<String> = r.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!(
            "pid {} owner {} acquired {} fields [{}]",
            r.pid,
            r.owner,
            self.show_time(r.acquired_at),
            fields.join(" ")
        )
    }

    pub(crate) fn show_observed(&self, o: &Observed) -> String {
        let holder = match &o.holder {
            Holder::Record(r) => self.show_record(r),
            other => other.to_string(),
        };
        let bytes = o.identity.as_bytes();
        let mut identity: String = bytes.iter().take(16).map(|b| format!("{b:02x}")).collect();
        if bytes.len() > 16 {
            identity.push('…');
        }
        format!(
            "held by {holder}, identity {identity}, refreshed {}",
            self.show_time(o.refreshed_at)
        )
    }
}

/// Where a check's stamps start: the wall clock, truncated to whole seconds.
///
/// Real time rather than a fixed date, so that backends whose stamps must be
/// plausible (a server that rejects far-off times) see plausible ones; whole
/// seconds, so that a backend keeping one-second precision stores every stamp
/// exactly. Only read once per check: every later stamp is `t0` plus a fixed
/// offset, and no check sleeps.
fn base_time() -> SystemTime {
    // A clock before 1970 is broken, but the checks only need some base.
    const FALLBACK_SECS: u64 = 1_700_000_000;
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(FALLBACK_SECS, |d| d.as_secs());
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// Polls every future until all are done and returns their outputs in order.
///
/// A runtime-free stand-in for `futures::future::join_all`: the suite has no
/// runtime dependency, and running the futures inside the caller's task keeps
/// it so. Each pending future is polled on every wake-up, which is fine for
/// the handful the race check joins.
pub(crate) async fn join_all<'a, T: Send + 'a>(futures: Vec<BoxFuture<'a, T>>) -> Vec<T> {
    let mut pending: Vec<Option<BoxFuture<'a, T>>> = futures.into_iter().map(Some).collect();
    let mut done: Vec<Option<T>> = pending.iter().map(|_| None).collect();
    poll_fn(|cx| {
        let mut all_done = true;
        for (slot, out) in pending.iter_mut().zip(done.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => {
                        *out = Some(value);
                        *slot = None;
                    }
                    Poll::Pending => all_done = false,
                }
            }
        }
        if all_done {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    // Every slot is `Some` once all futures completed.
    done.into_iter().flatten().collect()
}
