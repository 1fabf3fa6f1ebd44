//! The checks. Each takes a fresh resource from the factory, plays one or
//! more simulated processes through their own handles, and compares every
//! answer and every later inspection with what the `LockBackend` contract
//! requires. No check sleeps: every stamp is given explicitly.

use heldlock_core::{
    Broke, Created, LockBackend, LockRecord, Observed, OwnerId, Refreshed, Released,
};

use crate::capabilities::Capabilities;
use crate::factory::BackendFactory;
use crate::harness::{BoxFuture, Cx, PID_A, PID_B, PID_RACERS, join_all};
use crate::report::Failure;

/// How many peers [`check_create_race`] races.
pub const RACERS: u32 = 8;

/// A free resource: `inspect` says `Absent`; a stranger's `refresh` says
/// `Lost` and its `release` says `Absent`; neither creates a lock.
///
/// # Errors
///
/// A [`Failure`] naming the first step that broke the contract.
pub async fn check_inspect_free(
    factory: &dyn BackendFactory,
    caps: Capabilities,
) -> Result<(), Failure> {
    let cx = Cx::new("inspect_free", factory, caps)?;
    let a = cx.open("A")?;
    let stranger = OwnerId::random();
    cx.absent(&*a, "inspect of a free resource").await?;
    cx.refresh(
        &*a,
        &stranger,
        cx.at(1),
        Refreshed::Lost,
        "refresh on a free resource",
    )
    .await?;
    cx.release(
        &*a,
        &stranger,
        Released::Absent,
        "release on a free resource",
    )
    .await?;
    cx.absent(&*a, "inspect after refresh and release on a free resource")
        .await
}

/// `try_create` on a free resource says `Created`; `inspect` then shows the
/// record as written (pid, owner, fields in order, `acquired_at`) and a
/// refresh stamp equal to `acquired_at`; inspecting again gives the very same
/// observation (identity included), as `break_if_unchanged` relies on.
///
/// # Errors
///
/// A [`Failure`] naming the first step that broke the contract.
pub async fn check_create_then_inspect(
    factory: &dyn BackendFactory,
    caps: Capabilities,
) -> Result<(), Failure> {
    let cx = Cx::new("create_then_inspect", factory, caps)?;
    let a = cx.open("A")?;
    let record = cx.record(PID_A, cx.at(0));
    cx.try_create(
        &*a,
        &record,
        Created::Created,
        "A's try_create on a free resource",
    )
    .await?;
    let first = cx
        .present(&*a, &record, record.acquired_at, "inspect after A's create")
        .await?;
    cx.unchanged(&*a, &first, "second inspect with nothing changed")
        .await?;
    let b = cx.open("B")?;
    cx.unchanged(&*b, &first, "peer B's inspect with nothing changed")
        .await
}

/// While A holds the lock, `try_create` by peer B (another owner) and by A's
/// own handle (another record) both say `Exists`, and A's lock stays exactly
/// as it was.
///
/// # Errors
///
/// A [`Failure`] naming the first step that broke the contract.
pub async fn check_create_exists(
    factory: &dyn BackendFactory,
    caps: Capabilities,
) -> Result<(), Failure> {
    let cx = Cx::new("create_exists", factory, caps)?;
    let (a, b) = (cx.open("A")?, cx.open("B")?);
    let record_a = cx.record(PID_A, cx.at(0));
    let record_b = cx.record(PID_B, cx.at(1));
    cx.try_create(&*a, &record_a, Created::Created, "A's try_create")
        .await?;
    let held = cx
        .present(
            &*a,
            &record_a,
            record_a.acquired_at,
            "inspect after A's create",
        )
        .await?;
    cx.try_create(
        &*b,
        &record_b,
        Created::Exists,
        "peer B's try_create while A holds",
    )
    .await?;
    cx.unchanged(&*b, &held, "inspect after B's try_create")
        .await?;
    cx.try_create(
        &*a,
        &record_b,
        Created::Exists,
        "A's handle creating again while A holds",
    )
    .await?;
    cx.unchanged(
        &*a,
        &held,
        "inspect after the second try_create on A's handle",
    )
    .await
}

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
    let record = cx.record(PID_A, cx.at(0));
    cx.try_create(&*a, &record, Created::Created, "A's try_create")
        .await?;
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
    let record = cx.record(PID_A, cx.at(0));
    cx.try_create(&*a, &record, Created::Created, "A's try_create")
        .await?;
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
    let record = cx.record(PID_A, cx.at(0));
    cx.try_create(&*a, &record, Created::Created, "A's try_create")
        .await?;
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
    let record = cx.record(PID_A, cx.at(0));
    cx.try_create(&*a, &record, Created::Created, "A's try_create")
        .await?;
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
    let record = cx.record(PID_A, cx.at(0));
    cx.try_create(&*a, &record, Created::Created, "A's try_create")
        .await?;
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
    let record = cx.record(PID_A, cx.at(0));
    cx.try_create(&*a, &record, Created::Created, "A's try_create")
        .await?;
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
    let record = cx.record(PID_A, cx.at(0));
    cx.try_create(&*a, &record, Created::Created, "A's try_create")
        .await?;
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
    let record_a = cx.record(PID_A, cx.at(0));
    cx.try_create(&*a, &record_a, Created::Created, "A's try_create")
        .await?;
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
    let record = cx.record(PID_A, cx.at(0));
    cx.try_create(&*a, &record, Created::Created, "A's try_create")
        .await?;
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

/// Two successive instances differ in identity even with identical content:
/// A creates, releases, and peer B re-creates with a copy of A's record (same
/// stamp). The observations differ only in identity, and a break with the
/// first one says `Changed` and leaves the second lock in place.
///
/// # Errors
///
/// A [`Failure`] naming the first step that broke the contract.
pub async fn check_identity_per_instance(
    factory: &dyn BackendFactory,
    caps: Capabilities,
) -> Result<(), Failure> {
    let cx = Cx::new("identity_per_instance", factory, caps)?;
    let (a, b, c) = (cx.open("A")?, cx.open("B")?, cx.open("C")?);
    let record = cx.record(PID_A, cx.at(0));
    cx.try_create(&*a, &record, Created::Created, "A's try_create")
        .await?;
    let first = cx
        .present(&*c, &record, record.acquired_at, "C's inspect of A's lock")
        .await?;
    cx.release(&*a, &record.owner, Released::Released, "A's release")
        .await?;
    cx.try_create(
        &*b,
        &record,
        Created::Created,
        "B's try_create with a copy of A's record",
    )
    .await?;
    let second = cx
        .present(&*c, &record, record.acquired_at, "C's inspect of B's copy")
        .await?;
    if first.identity == second.identity {
        return Err(cx.mismatch(
            "compare the identities of A's lock and B's copy",
            "two different identities for two lock instances".into(),
            format!(
                "the same identity for both: first {}; second {}",
                cx.show_observed(&first),
                cx.show_observed(&second)
            ),
        ));
    }
    cx.break_if_unchanged(
        &*c,
        &first,
        Broke::Changed,
        "C's break with its observation of A's former lock",
    )
    .await?;
    cx.unchanged(&*c, &second, "inspect after C's break").await
}

/// [`RACERS`] peers, each with its own handle and owner, race `try_create`
/// on a free resource (joined in one task, so a backend whose steps really
/// await interleaves them): exactly one says `Created`, and the lock holds
/// that winner's record.
///
/// # Errors
///
/// A [`Failure`] naming the first step that broke the contract.
pub async fn check_create_race(
    factory: &dyn BackendFactory,
    caps: Capabilities,
) -> Result<(), Failure> {
    let cx = Cx::new("create_race", factory, caps)?;
    let mut racers = Vec::new();
    for i in 0..RACERS {
        let handle = cx.open(&format!("racer {i}"))?;
        racers.push((handle, cx.record(PID_RACERS + i, cx.at(0))));
    }
    let attempts: Vec<BoxFuture<'_, _>> = racers
        .iter()
        .map(|(handle, record)| handle.try_create(record))
        .collect();
    let mut winners = Vec::new();
    for (i, result) in join_all(attempts).await.into_iter().enumerate() {
        if cx.ok(&format!("racer {i}'s try_create"), result)? == Created::Created {
            winners.push(i);
        }
    }
    let [winner] = winners[..] else {
        return Err(cx.mismatch(
            &format!("{RACERS} concurrent try_creates on a free resource"),
            "exactly one Created".into(),
            format!("Created for racers {winners:?}"),
        ));
    };
    let (handle, record) = &racers[winner];
    cx.present(
        &**handle,
        record,
        record.acquired_at,
        "inspect after the race",
    )
    .await
    .map(drop)
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
    let record = cx.record(PID_A, cx.at(0));
    cx.try_create(&*a, &record, Created::Created, "A's try_create")
        .await?;
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
    let record_a = cx.record(PID_A, cx.at(0));
    cx.try_create(a, &record_a, Created::Created, "A's try_create")
        .await?;
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
