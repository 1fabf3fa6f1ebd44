//! Creating and looking: a free resource, create and inspect, contention,
//! a new identity per instance, and a create race.

use heldlock_core::{Broke, Created, LockBackend, OwnerId, Refreshed, Released};

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
    let record = cx.a_creates(&*a).await?;
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
