//! Ownership: refresh and release by the owner and by strangers, after a
//! release, after a replacement, of a copied record; and `release_blocking`.

use heldlock_core::{
    Broke, Created, LockBackend, LockRecord, Observed, OwnerId, Refreshed, Released,
};

use crate::capabilities::Capabilities;
use crate::factory::BackendFactory;
use crate::harness::{Cx, PID_A, PID_B};
use crate::report::Failure;

/// The owner's `refresh(now)` says `Refreshed` and moves the stamp to `now`
/// (twice, to two later stamps) without rewriting the record.
///
/// # Errors
///
/// A [`Failure`] naming the first step that broke the contract.
pub async fn check_refresh_by_owner(
    factory: &dyn BackendFactory,
    caps: Capabilities,
) -> Result<(), Failure> {
    let cx = Cx::new("refresh_by_owner", factory, caps)?;
    let a = cx.open("A")?;
    let record = cx.a_creates(&*a).await?;
    for n in [1, 2] {
        let step = format!("A's refresh to {}", cx.show_time(cx.at(n)));
        cx.refresh(&*a, &record.owner, cx.at(n), Refreshed::Refreshed, &step)
            .await?;
        let step = format!("inspect after {step}");
        cx.present(&*a, &record, cx.at(n), &step).await?;
    }
    Ok(())
}

/// A stranger's `refresh` (peer B with another owner id) says `Lost` and
/// leaves A's lock exactly as it was, stamp included.
///
/// # Errors
///
/// A [`Failure`] naming the first step that broke the contract.
pub async fn check_refresh_by_stranger(
    factory: &dyn BackendFactory,
    caps: Capabilities,
) -> Result<(), Failure> {
    let cx = Cx::new("refresh_by_stranger", factory, caps)?;
    let (a, b) = (cx.open("A")?, cx.open("B")?);
    let record = cx.a_creates(&*a).await?;
    let held = cx
        .present(&*a, &record, record.acquired_at, "inspect after A's create")
        .await?;
    cx.refresh(
        &*b,
        &OwnerId::random(),
        cx.at(1),
        Refreshed::Lost,
        "stranger B's refresh of A's lock",
    )
    .await?;
    cx.unchanged(&*b, &held, "inspect after B's refresh").await
}

/// A stranger's `release` (peer B) says `NotOurs` and leaves A's lock exactly
/// as it was.
///
/// # Errors
///
/// A [`Failure`] naming the first step that broke the contract.
pub async fn check_release_by_stranger(
    factory: &dyn BackendFactory,
    caps: Capabilities,
) -> Result<(), Failure> {
    let cx = Cx::new("release_by_stranger", factory, caps)?;
    let (a, b) = (cx.open("A")?, cx.open("B")?);
    let record = cx.a_creates(&*a).await?;
    let held = cx
        .present(&*a, &record, record.acquired_at, "inspect after A's create")
        .await?;
    cx.release(
        &*b,
        &OwnerId::random(),
        Released::NotOurs,
        "stranger B's release of A's lock",
    )
    .await?;
    cx.unchanged(&*b, &held, "inspect after B's release").await
}

/// The owner's `release` says `Released` and the lock is gone; a second
/// release says `Absent`; the resource is free again (a peer can create).
///
/// # Errors
///
/// A [`Failure`] naming the first step that broke the contract.
pub async fn check_release_by_owner(
    factory: &dyn BackendFactory,
    caps: Capabilities,
) -> Result<(), Failure> {
    let cx = Cx::new("release_by_owner", factory, caps)?;
    let (a, b) = (cx.open("A")?, cx.open("B")?);
    let record = cx.a_creates(&*a).await?;
    cx.release(&*a, &record.owner, Released::Released, "A's release")
        .await?;
    cx.absent(&*b, "inspect after A's release").await?;
    cx.release(&*a, &record.owner, Released::Absent, "A's second release")
        .await?;
    let record_b = cx.record(PID_B, cx.at(1));
    cx.try_create(
        &*b,
        &record_b,
        Created::Created,
        "peer B's try_create after A's release",
    )
    .await?;
    cx.present(
        &*b,
        &record_b,
        record_b.acquired_at,
        "inspect after B's create",
    )
    .await
    .map(drop)
}

/// After A released, A's `refresh` says `Lost` and does not bring the lock
/// back.
///
/// # Errors
///
/// A [`Failure`] naming the first step that broke the contract.
pub async fn check_refresh_after_release(
    factory: &dyn BackendFactory,
    caps: Capabilities,
) -> Result<(), Failure> {
    let cx = Cx::new("refresh_after_release", factory, caps)?;
    let a = cx.open("A")?;
    let record = cx.a_creates(&*a).await?;
    cx.release(&*a, &record.owner, Released::Released, "A's release")
        .await?;
    cx.refresh(
        &*a,
        &record.owner,
        cx.at(1),
        Refreshed::Lost,
        "A's refresh after its release",
    )
    .await?;
    cx.absent(&*a, "inspect after A's refresh after its release")
        .await
}

/// Peer B breaks A's lock and creates its own; A's `refresh` then says `Lost`
/// and leaves B's lock untouched (its stamp is not kept fresh by A).
///
/// # Errors
///
/// A [`Failure`] naming the first step that broke the contract.
pub async fn check_refresh_after_replacement(
    factory: &dyn BackendFactory,
    caps: Capabilities,
) -> Result<(), Failure> {
    let cx = Cx::new("refresh_after_replacement", factory, caps)?;
    let (a, b) = (cx.open("A")?, cx.open("B")?);
    let (record_a, replacement) = take_over(&cx, &*a, &*b).await?;
    cx.refresh(
        &*a,
        &record_a.owner,
        cx.at(2),
        Refreshed::Lost,
        "A's refresh after B replaced its lock",
    )
    .await?;
    cx.unchanged(&*b, &replacement, "inspect after A's refresh")
        .await
}

/// Peer B breaks A's lock and creates its own; A's `release` then says
/// `NotOurs` and leaves B's lock untouched.
///
/// # Errors
///
/// A [`Failure`] naming the first step that broke the contract.
pub async fn check_release_after_replacement(
    factory: &dyn BackendFactory,
    caps: Capabilities,
) -> Result<(), Failure> {
    let cx = Cx::new("release_after_replacement", factory, caps)?;
    let (a, b) = (cx.open("A")?, cx.open("B")?);
    let (record_a, replacement) = take_over(&cx, &*a, &*b).await?;
    cx.release(
        &*a,
        &record_a.owner,
        Released::NotOurs,
        "A's release after B replaced its lock",
    )
    .await?;
    cx.unchanged(&*b, &replacement, "inspect after A's release")
        .await
}

/// When [`Capabilities::release_blocking`] is claimed, `release_blocking`
/// behaves like `release`: `NotOurs` for a stranger (lock untouched),
/// `Released` for the owner (lock gone), then `Absent`, and `NotOurs` after a
/// replacement. When it is not claimed, `release_blocking` must return
/// `None`, so that a backend that has it declares it and gets it checked.
///
/// # Errors
///
/// A [`Failure`] naming the first step that broke the contract.
pub async fn check_release_blocking(
    factory: &dyn BackendFactory,
    caps: Capabilities,
) -> Result<(), Failure> {
    let cx = Cx::new("release_blocking", factory, caps)?;
    let (a, b) = (cx.open("A")?, cx.open("B")?);
    let record = cx.a_creates(&*a).await?;
    let held = cx
        .present(&*a, &record, record.acquired_at, "inspect after A's create")
        .await?;
    let stranger = OwnerId::random();
    if !cx.caps().release_blocking {
        let step = "stranger B's release_blocking with the capability unclaimed";
        return match b.release_blocking(&stranger) {
            None => {
                cx.unchanged(&*a, &held, "inspect after B's release_blocking")
                    .await
            }
            Some(found) => Err(cx.mismatch(
                step,
                "None, since Capabilities::release_blocking is not claimed \
                 (claim it so that the suite checks it)"
                    .into(),
                format!("Some({found:?})"),
            )),
        };
    }
    cx.release_blocking(
        &*b,
        &stranger,
        Released::NotOurs,
        "stranger B's release_blocking of A's lock",
    )?;
    cx.unchanged(&*a, &held, "inspect after B's release_blocking")
        .await?;
    cx.release_blocking(
        &*a,
        &record.owner,
        Released::Released,
        "A's release_blocking",
    )?;
    cx.absent(&*b, "inspect after A's release_blocking").await?;
    cx.release_blocking(
        &*a,
        &record.owner,
        Released::Absent,
        "A's second release_blocking",
    )?;

    // The replacement case, as in `check_release_after_replacement`.
    let (record_a, replacement) = take_over(&cx, &*a, &*b).await?;
    cx.release_blocking(
        &*a,
        &record_a.owner,
        Released::NotOurs,
        "A's release_blocking after B replaced its lock",
    )?;
    cx.unchanged(
        &*b,
        &replacement,
        "inspect after A's release_blocking of a replaced lock",
    )
    .await
}

/// A lock that a peer re-created
/// with a copy of A's record is not A's: after B broke A's lock (A never
/// released) and after A released, in both cases followed by B creating a
/// copy of A's record, A's `refresh` says `Lost` and A's `release` says
/// `NotOurs`, and B's copy stays untouched.
///
/// # Errors
///
/// A [`Failure`] naming the first step that broke the contract.
pub async fn check_copied_record_not_ours(
    factory: &dyn BackendFactory,
    caps: Capabilities,
) -> Result<(), Failure> {
    let cx = Cx::new("copied_record_not_ours", factory, caps)?;
    let (a, b) = (cx.open("A")?, cx.open("B")?);
    for (n, a_released) in [(0, false), (1, true)] {
        let how = if a_released {
            "A released"
        } else {
            "B broke A's lock"
        };
        let record = cx.record(PID_A, cx.at(n));
        cx.try_create(
            &*a,
            &record,
            Created::Created,
            &format!("A's try_create ({how})"),
        )
        .await?;
        if a_released {
            cx.release(&*a, &record.owner, Released::Released, "A's release")
                .await?;
        } else {
            let seen = cx
                .present(&*b, &record, record.acquired_at, "B's inspect of A's lock")
                .await?;
            cx.break_if_unchanged(&*b, &seen, Broke::Broken, "B's break of A's lock")
                .await?;
        }
        cx.try_create(
            &*b,
            &record,
            Created::Created,
            &format!("B's try_create with a copy of A's record after {how}"),
        )
        .await?;
        let copy = cx
            .present(&*b, &record, record.acquired_at, "inspect of B's copy")
            .await?;
        cx.refresh(
            &*a,
            &record.owner,
            cx.at(n + 5),
            Refreshed::Lost,
            &format!("A's refresh of B's copy after {how}"),
        )
        .await?;
        cx.unchanged(&*b, &copy, "inspect after A's refresh of B's copy")
            .await?;
        cx.release(
            &*a,
            &record.owner,
            Released::NotOurs,
            &format!("A's release of B's copy after {how}"),
        )
        .await?;
        cx.unchanged(&*b, &copy, "inspect after A's release of B's copy")
            .await?;
        // Clean up as B, the copy's creator, so the second round starts free.
        let seen = copy;
        cx.break_if_unchanged(&*b, &seen, Broke::Broken, "B's break of its copy")
            .await?;
    }
    Ok(())
}

/// A creates; peer B observes, breaks and creates its own lock. Returns A's
/// record and B's observed replacement.
async fn take_over(
    cx: &Cx,
    a: &dyn LockBackend,
    b: &dyn LockBackend,
) -> Result<(LockRecord, Observed), Failure> {
    let record_a = cx.a_creates(a).await?;
    let seen = cx
        .present(
            b,
            &record_a,
            record_a.acquired_at,
            "B's inspect of A's lock",
        )
        .await?;
    cx.break_if_unchanged(b, &seen, Broke::Broken, "B's break of A's lock")
        .await?;
    let record_b = cx.record(PID_B, cx.at(1));
    cx.try_create(
        b,
        &record_b,
        Created::Created,
        "B's try_create after its break",
    )
    .await?;
    let replacement = cx
        .present(
            b,
            &record_b,
            record_b.acquired_at,
            "inspect of B's replacement",
        )
        .await?;
    Ok((record_a, replacement))
}
