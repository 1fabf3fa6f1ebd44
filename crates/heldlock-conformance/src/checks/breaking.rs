//! Breaking: with a current, a pre-refresh, a replaced and an absent
//! observation.

use heldlock_core::{Broke, Created, Refreshed, Released};

use crate::capabilities::Capabilities;
use crate::factory::BackendFactory;
use crate::harness::{Cx, PID_B};
use crate::report::Failure;

/// Peer B's `break_if_unchanged` with the current observation says `Broken`
/// and the lock is gone; A's `refresh` then says `Lost` and A's `release`
/// `Absent`, without bringing it back; B can then create.
///
/// # Errors
///
/// A [`Failure`] naming the first step that broke the contract.
pub async fn check_break_current(
    factory: &dyn BackendFactory,
    caps: Capabilities,
) -> Result<(), Failure> {
    let cx = Cx::new("break_current", factory, caps)?;
    let (a, b) = (cx.open("A")?, cx.open("B")?);
    let record = cx.a_creates(&*a).await?;
    let seen = cx
        .present(&*b, &record, record.acquired_at, "B's inspect of A's lock")
        .await?;
    cx.break_if_unchanged(
        &*b,
        &seen,
        Broke::Broken,
        "B's break with the current observation",
    )
    .await?;
    cx.absent(&*b, "inspect after B's break").await?;
    cx.refresh(
        &*a,
        &record.owner,
        cx.at(1),
        Refreshed::Lost,
        "A's refresh after its lock was broken",
    )
    .await?;
    cx.release(
        &*a,
        &record.owner,
        Released::Absent,
        "A's release after its lock was broken",
    )
    .await?;
    cx.absent(
        &*b,
        "inspect after A's refresh and release of a broken lock",
    )
    .await?;
    let record_b = cx.record(PID_B, cx.at(1));
    cx.try_create(
        &*b,
        &record_b,
        Created::Created,
        "B's try_create after its break",
    )
    .await
}

/// `break_if_unchanged` with an observation taken before the owner refreshed
/// says `Changed` and leaves the refreshed lock in place.
///
/// # Errors
///
/// A [`Failure`] naming the first step that broke the contract.
pub async fn check_break_after_refresh(
    factory: &dyn BackendFactory,
    caps: Capabilities,
) -> Result<(), Failure> {
    let cx = Cx::new("break_after_refresh", factory, caps)?;
    let (a, b) = (cx.open("A")?, cx.open("B")?);
    let record = cx.a_creates(&*a).await?;
    let old = cx
        .present(
            &*b,
            &record,
            record.acquired_at,
            "B's inspect before A's refresh",
        )
        .await?;
    cx.refresh(
        &*a,
        &record.owner,
        cx.at(1),
        Refreshed::Refreshed,
        "A's refresh",
    )
    .await?;
    let fresh = cx
        .present(&*b, &record, cx.at(1), "B's inspect after A's refresh")
        .await?;
    cx.break_if_unchanged(
        &*b,
        &old,
        Broke::Changed,
        "B's break with the observation from before A's refresh",
    )
    .await?;
    cx.unchanged(&*b, &fresh, "inspect after B's stale break")
        .await
}

/// `break_if_unchanged` with an observation of an earlier lock instance,
/// after that lock was released and peer B created its own, says `Changed`
/// and leaves B's replacement untouched.
///
/// # Errors
///
/// A [`Failure`] naming the first step that broke the contract.
pub async fn check_break_replaced(
    factory: &dyn BackendFactory,
    caps: Capabilities,
) -> Result<(), Failure> {
    let cx = Cx::new("break_replaced", factory, caps)?;
    let (a, b, c) = (cx.open("A")?, cx.open("B")?, cx.open("C")?);
    let record_a = cx.a_creates(&*a).await?;
    let old = cx
        .present(
            &*c,
            &record_a,
            record_a.acquired_at,
            "C's inspect of A's lock",
        )
        .await?;
    cx.release(&*a, &record_a.owner, Released::Released, "A's release")
        .await?;
    let record_b = cx.record(PID_B, cx.at(1));
    cx.try_create(
        &*b,
        &record_b,
        Created::Created,
        "B's try_create after A's release",
    )
    .await?;
    let replacement = cx
        .present(
            &*c,
            &record_b,
            record_b.acquired_at,
            "C's inspect of B's replacement",
        )
        .await?;
    cx.break_if_unchanged(
        &*c,
        &old,
        Broke::Changed,
        "C's break with its observation of A's former lock",
    )
    .await?;
    cx.unchanged(
        &*c,
        &replacement,
        "inspect after C's break of a replaced lock",
    )
    .await
}

/// `break_if_unchanged` on a lock that was released after it was observed
/// says `Absent` and creates nothing.
///
/// # Errors
///
/// A [`Failure`] naming the first step that broke the contract.
pub async fn check_break_absent(
    factory: &dyn BackendFactory,
    caps: Capabilities,
) -> Result<(), Failure> {
    let cx = Cx::new("break_absent", factory, caps)?;
    let (a, b) = (cx.open("A")?, cx.open("B")?);
    let record = cx.a_creates(&*a).await?;
    let seen = cx
        .present(&*b, &record, record.acquired_at, "B's inspect of A's lock")
        .await?;
    cx.release(&*a, &record.owner, Released::Released, "A's release")
        .await?;
    cx.break_if_unchanged(&*b, &seen, Broke::Absent, "B's break after A released")
        .await?;
    cx.absent(&*b, "inspect after B's break of an absent lock")
        .await
}
