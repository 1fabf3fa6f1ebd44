//! Cancel safety: a step's future dropped at each of its await points in
//! turn, and what the resource may look like afterwards.
//!
//! The contract (`LockBackend`, "Cancel safety") allows a dropped step to
//! be *not done* or *done as if completed*, and nothing in between. A step
//! may also be done *after* its future was dropped: a request that reached
//! a server, a worker thread that runs it to its end. So the checks accept
//! a resource that turns from "not done" to "done" once, later; what they
//! refuse is any third state (a lock that is neither absent nor the
//! creator's as written, a lock changed half-way), a lock the creator
//! cannot release, and a resource a peer can no longer take. Each cut gets
//! a fresh resource, so that a step done late cannot disturb the next cut.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::Poll;

use heldlock_core::{Created, Inspection, LockBackend, LockRecord, Released};

use crate::capabilities::Capabilities;
use crate::factory::BackendFactory;
use crate::harness::{Cx, PID_A, PID_B};
use crate::report::Failure;

/// How many polls [`check_cancel_create`] and [`check_cancel_release`] allow
/// one step before they report it as never completing.
pub const MAX_CANCEL_POINTS: u32 = 1_000;

/// How a step polled at most a given number of times ended.
pub(crate) enum Cut<T> {
    /// It completed within the polls allowed.
    Completed(T),
    /// It was dropped after that many polls had returned `Pending`.
    Dropped,
}

/// Polls `step` (in the caller's task, so that its wake-ups drive it) until
/// it completes or `polls` polls have returned `Pending`, and then drops it
/// at once, at the await point it stopped at. Zero polls drop it unpolled.
pub(crate) async fn poll_at_most<F: Future>(step: F, polls: u32) -> Cut<F::Output> {
    let mut step = pin!(step);
    let mut polled = 0;
    poll_fn(|task| {
        if polled == polls {
            return Poll::Ready(Cut::Dropped);
        }
        polled += 1;
        match step.as_mut().poll(task) {
            Poll::Ready(output) => Poll::Ready(Cut::Completed(output)),
            Poll::Pending if polled == polls => Poll::Ready(Cut::Dropped),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// A's `try_create` on a free resource, dropped after 0, 1, 2, ... polls
/// (at each of its await points in turn, a fresh resource each time) until
/// a run completes. After each drop, A's handle and then peer B's find no
/// lock or A's lock exactly as written; A's `release` then says `Released`
/// if they found A's lock (`Absent` is allowed otherwise); and B can take
/// and release the lock, finding at most A's lock first (a create done
/// late), which A's `release` removes. The run that completes must say
/// `Created`, and A's lock must be there.
///
/// # Errors
///
/// A [`Failure`] naming the first step that broke the contract, or a step
/// that did not complete within [`MAX_CANCEL_POINTS`] polls.
pub async fn check_cancel_create(
    factory: &dyn BackendFactory,
    caps: Capabilities,
) -> Result<(), Failure> {
    for polls in 0..=MAX_CANCEL_POINTS {
        let cx = Cx::new("cancel_create", factory, caps)?;
        let (a, b) = (cx.open("A")?, cx.open("B")?);
        let record = cx.record(PID_A, cx.at(0));
        match poll_at_most(a.try_create(&record), polls).await {
            Cut::Completed(result) => {
                let step = format!("A's try_create polled to completion ({polls} polls)");
                let found = cx.ok(&step, result)?;
                cx.expect(&step, Created::Created, found)?;
                cx.present(&*b, &record, record.acquired_at, "B's inspect of A's lock")
                    .await?;
                return cx
                    .release(&*a, &record.owner, Released::Released, "A's release")
                    .await;
            }
            Cut::Dropped => settle_dropped_create(&cx, &*a, &*b, &record, polls).await?,
        }
    }
    Err(never_completes("cancel_create", "A's try_create"))
}

/// After A's `try_create` was dropped: no lock or A's as written, A's to
/// release; and a resource B can take.
async fn settle_dropped_create(
    cx: &Cx,
    a: &dyn LockBackend,
    b: &dyn LockBackend,
    record: &LockRecord,
    polls: u32,
) -> Result<(), Failure> {
    let after = format!("A's try_create was dropped after {polls} polls");
    let mut made = false;
    for (handle, who) in [(a, "A"), (b, "peer B")] {
        let step = format!("{who}'s inspect after {after} (Absent, or A's lock as written)");
        if let Inspection::Present(_) = cx.inspect(handle, &step).await? {
            cx.present(handle, record, record.acquired_at, &step)
                .await?;
            made = true;
        }
    }
    let step = format!("A's release after {after}");
    let released = cx.ok(&step, a.release(&record.owner).await)?;
    match released {
        Released::Released => {}
        Released::Absent if !made => {}
        other => {
            let expected = if made {
                "Released (A's lock was there)"
            } else {
                "Released or Absent"
            };
            return Err(cx.mismatch(&step, expected.into(), format!("{other:?}")));
        }
    }
    // A peer can take the lock; a create of A's done late may be in its way.
    let record_b = cx.record(PID_B, cx.at(1));
    let step = format!("peer B's try_create after {after}");
    if cx.ok(&step, b.try_create(&record_b).await)? == Created::Exists {
        let late = format!("B's inspect after its try_create found a lock ({after})");
        cx.present(b, record, record.acquired_at, &late).await?;
        let step = format!("A's release of its late lock ({after})");
        cx.release(a, &record.owner, Released::Released, &step)
            .await?;
        let step = format!("peer B's second try_create after {after}");
        cx.try_create(b, &record_b, Created::Created, &step).await?;
    }
    cx.release(b, &record_b.owner, Released::Released, "B's release")
        .await
}

/// A's `release` of its lock, dropped after 0, 1, 2, ... polls (at each of
/// its await points in turn, a fresh resource each time) until a run
/// completes. After each drop, A's handle and then peer B's find either A's
/// lock untouched or no lock; A's `release` then says `Released` or
/// `Absent`, after which the lock is gone, and B can take and release it.
/// The run that completes must say `Released` and leave no lock.
///
/// # Errors
///
/// A [`Failure`] naming the first step that broke the contract, or a step
/// that did not complete within [`MAX_CANCEL_POINTS`] polls.
pub async fn check_cancel_release(
    factory: &dyn BackendFactory,
    caps: Capabilities,
) -> Result<(), Failure> {
    for polls in 0..=MAX_CANCEL_POINTS {
        let cx = Cx::new("cancel_release", factory, caps)?;
        let (a, b) = (cx.open("A")?, cx.open("B")?);
        let record = cx.a_creates(&*a).await?;
        let held = cx
            .present(&*a, &record, record.acquired_at, "inspect after A's create")
            .await?;
        let after = match poll_at_most(a.release(&record.owner), polls).await {
            Cut::Completed(result) => {
                let step = format!("A's release polled to completion ({polls} polls)");
                let found = cx.ok(&step, result)?;
                cx.expect(&step, Released::Released, found)?;
                return cx.absent(&*b, "B's inspect after A's release").await;
            }
            Cut::Dropped => format!("A's release was dropped after {polls} polls"),
        };
        for (handle, who) in [(&*a, "A"), (&*b, "peer B")] {
            let step = format!("{who}'s inspect after {after} (A's lock untouched, or Absent)");
            cx.unchanged_or_absent(handle, &held, &step).await?;
        }
        let step = format!("A's release after {after}");
        match cx.ok(&step, a.release(&record.owner).await)? {
            Released::Released | Released::Absent => {}
            other => {
                let expected = "Released or Absent".to_owned();
                return Err(cx.mismatch(&step, expected, format!("{other:?}")));
            }
        }
        cx.absent(
            &*b,
            &format!("peer B's inspect after A's second release ({after})"),
        )
        .await?;
        let record_b = cx.record(PID_B, cx.at(1));
        let step = format!("peer B's try_create after {after}");
        cx.try_create(&*b, &record_b, Created::Created, &step)
            .await?;
        cx.release(&*b, &record_b.owner, Released::Released, "B's release")
            .await?;
    }
    Err(never_completes("cancel_release", "A's release"))
}

fn never_completes(check: &'static str, what: &str) -> Failure {
    Failure::Mismatch {
        check,
        step: format!("{what}, polled whenever it woke the task"),
        expected: format!("completes within {MAX_CANCEL_POINTS} polls"),
        found: format!("still pending after {MAX_CANCEL_POINTS} polls"),
    }
}
