//! The core's generic `Lock` over the etcd backend: holders that die, drop
//! their guard or lose their lease behind their back, and two clients on
//! one key.
//!
//! Where a lease's lapse is the thing under test, real time passes: the
//! tests' etcd grants one-second TTLs, and each bound says what it allows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use heldlock_core::{
    Created, Error, Lock, LockBackend, LockOptions, LockRecord, OwnerId, Released,
};
use heldlock_etcd::{EtcdBackend, EtcdLock};
use heldlock_tokio::TokioRuntime;
use support::{Etcd, unique_key};

/// A poll no test lasts: a waiter that gets the lock in time was woken by
/// the watch, not by its poll.
const NO_POLL: Duration = Duration::from_secs(600);

fn lock(backend: &Arc<EtcdBackend>, stale: Duration, max_wait: Duration) -> Lock {
    let options = LockOptions::new(stale).max_wait(max_wait).poll(NO_POLL);
    Lock::new(backend.clone(), Arc::new(TokioRuntime), options).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_take_turns_and_each_turn_has_a_greater_token() {
    let Some(etcd) = Etcd::any("two_clients_take_turns_and_each_turn_has_a_greater_token") else {
        return;
    };
    let key = unique_key("two-clients");
    // Two connections, as two processes would have.
    let a = Arc::new(
        EtcdBackend::connect(etcd.endpoints(), key.clone())
            .await
            .unwrap(),
    );
    let b = Arc::new(EtcdBackend::connect(etcd.endpoints(), key).await.unwrap());
    let stale = Duration::from_secs(5);
    let (lock_a, lock_b) = (
        lock(&a, stale, Duration::from_secs(20)),
        lock(&b, stale, Duration::from_secs(20)),
    );

    let held_a = lock_a.acquire().await.unwrap();
    let token_a = a.create_revision(held_a.owner()).unwrap();
    // The core's token is the create revision.
    assert_eq!(held_a.fencing_token(), u64::try_from(token_a).ok());
    assert!(lock_b.try_acquire().await.unwrap().is_none(), "A holds it");
    assert_eq!(b.create_revision(held_a.owner()), None, "not B's lock");

    let waiter = tokio::spawn(async move {
        let held = lock_b.acquire().await.unwrap();
        (held, Instant::now())
    });
    let released_at = Instant::now();
    assert_eq!(held_a.release().await.unwrap(), Released::Released);
    let (held_b, acquired_at) = waiter.await.unwrap();
    // Woken by the deletion (the poll is 10 minutes): well under a second
    // when idle; 3 s allows for a loaded machine.
    let waited = acquired_at.saturating_duration_since(released_at);
    assert!(waited < Duration::from_secs(3), "B waited {waited:?}");
    let token_b = b.create_revision(held_b.owner()).unwrap();
    assert!(token_b > token_a, "tokens {token_a} then {token_b}");
    assert_eq!(held_b.fencing_token(), u64::try_from(token_b).ok());
    assert_eq!(a.create_revision(held_b.owner()), None);
    assert_eq!(held_b.release().await.unwrap(), Released::Released);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_grant_has_a_greater_fencing_token_than_the_one_before() {
    let Some(etcd) = Etcd::any("every_grant_has_a_greater_fencing_token_than_the_one_before")
    else {
        return;
    };
    let key = unique_key("tokens");
    let options = LockOptions::new(Duration::from_secs(3)).max_wait(Duration::from_secs(10));
    // Two connections, as two processes would have, through `EtcdLock`.
    let a = EtcdLock::<TokioRuntime>::connect(etcd.endpoints(), key.clone(), options.clone())
        .await
        .unwrap();
    let b = EtcdLock::<TokioRuntime>::connect(etcd.endpoints(), key, options)
        .await
        .unwrap();
    let mut tokens = Vec::new();
    for (round, lock) in [&a, &b, &a, &b].into_iter().enumerate() {
        let held = lock.acquire().await.unwrap();
        let token = held
            .fencing_token()
            .expect("etcd gives every grant a token");
        let revision = lock.backend().create_revision(held.owner()).unwrap();
        assert_eq!(i64::try_from(token).ok(), Some(revision), "round {round}");
        tokens.push(token);
        held.release().await.unwrap();
    }

    // A holder whose lease etcd ended behind its back (as a lapse would)
    // keeps its token; the next grant's is greater, and a task run under
    // the lock sees its own.
    let stale = a.acquire().await.unwrap();
    let lease = a.backend().holding(stale.owner()).unwrap().lease_id;
    etcd.client().await.lease_revoke(lease).await.unwrap();
    tokens.push(stale.fencing_token().unwrap());
    // (A lock of its own on B's connection: `EtcdLock`s of one process on
    // one key queue in the process, behind the stale holder's guard.)
    let unqueued = lock(b.backend(), Duration::from_secs(3), Duration::from_secs(10));
    let seen = unqueued
        .with_lock(|state| async move {
            assert!(state.acquired());
            state.fencing_token()
        })
        .await;
    tokens.push(seen.unwrap());
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "tokens in grant order: {tokens:?}"
    );
    assert_eq!(
        stale.fencing_token(),
        Some(tokens[4]),
        "kept from its grant"
    );
    assert!(!stale.refresh().await.unwrap(), "and its lock is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_core_never_breaks_an_etcd_lock_however_old_its_stamp() {
    let Some(etcd) = Etcd::any("the_core_never_breaks_an_etcd_lock_however_old_its_stamp") else {
        return;
    };
    let key = unique_key("old-stamp");
    // A holder whose stamp is 55 years old (a stopped clock), with a live
    // 30 s lease: a file lock would be stale at once by the wall-clock rule.
    let holder = EtcdBackend::connect(etcd.endpoints(), key.clone())
        .await
        .unwrap()
        .with_default_ttl(Duration::from_secs(30));
    let record = LockRecord::new(
        1,
        OwnerId::random(),
        UNIX_EPOCH + Duration::from_secs(1_000),
    );
    assert_eq!(holder.try_create(&record).await.unwrap(), Created::Created);

    // A waiter with `stale` 1 s waits 2.5 s: past its wall-clock rule at
    // once, and past its unchanged rule (the stamp stays put for `stale`).
    let waiter = Arc::new(EtcdBackend::connect(etcd.endpoints(), key).await.unwrap());
    let options = LockOptions::new(Duration::from_secs(1))
        .max_wait(Duration::from_millis(2_500))
        .poll(Duration::from_millis(100));
    let waiting = Lock::new(waiter, Arc::new(TokioRuntime), options).unwrap();
    match waiting.acquire().await {
        Err(Error::Timeout {
            holder: Some(h), ..
        }) => {
            assert_eq!(h.record().map(|r| &r.owner), Some(&record.owner));
        }
        other => panic!("the lock must stay the holder's: {other:?}"),
    }
    assert_eq!(
        holder.release(&record.owner).await.unwrap(),
        Released::Released
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_lease_is_learnt_by_refresh_and_by_lost() {
    let Some(etcd) = Etcd::any("a_revoked_lease_is_learnt_by_refresh_and_by_lost") else {
        return;
    };
    let backend = Arc::new(etcd.backend("revoked").await);
    let stale = Duration::from_secs(3);
    let lock = lock(&backend, stale, Duration::from_secs(5));
    let mut admin = etcd.client().await;

    // refresh() finds it at once.
    let held = lock.acquire().await.unwrap();
    let lease = backend.holding(held.owner()).unwrap().lease_id;
    admin.lease_revoke(lease).await.unwrap();
    assert!(!held.refresh().await.unwrap(), "refresh after the revoke");
    assert!(held.is_lost());
    tokio::time::timeout(Duration::from_secs(1), held.lost())
        .await
        .expect("lost() resolves once a refresh found the loss");
    assert_eq!(backend.holding(held.owner()), None);
    assert_eq!(held.release().await.unwrap(), Released::Absent);

    // lost() finds it through the heartbeat alone (every stale / 3 = 1 s;
    // twice `stale` allows for a loaded machine).
    let held = lock.acquire().await.unwrap();
    let lease = backend.holding(held.owner()).unwrap().lease_id;
    admin.lease_revoke(lease).await.unwrap();
    tokio::time::timeout(stale * 2, held.lost())
        .await
        .expect("the heartbeat finds the revoked lease");
    assert!(!held.refresh().await.unwrap());
    assert!(
        lock.try_acquire().await.unwrap().is_some(),
        "the key is free"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_of_one_holder_at_once_all_find_the_lock_theirs() {
    let Some(etcd) = Etcd::any("refreshes_of_one_holder_at_once_all_find_the_lock_theirs") else {
        return;
    };
    let backend = Arc::new(etcd.backend("refreshes-at-once").await);
    let lock = lock(&backend, Duration::from_secs(5), Duration::from_secs(5));
    let held = lock.acquire().await.unwrap();
    // Tasks of the holder re-assert the lock at the same moment (and the
    // heartbeat may be a fifth): each re-stamp rewrites what the others
    // last saw, and none of that makes the lock anyone else's.
    let (a, b, c, d) = tokio::join!(
        held.refresh(),
        held.refresh(),
        held.refresh(),
        held.refresh()
    );
    for (i, refreshed) in [a, b, c, d].into_iter().enumerate() {
        assert!(refreshed.unwrap(), "refresh {i} reported the lock lost");
    }
    assert!(!held.is_lost());
    assert_eq!(held.release().await.unwrap(), Released::Released);
    assert!(
        matches!(
            backend.inspect().await.unwrap(),
            heldlock_core::Inspection::Absent
        ),
        "the key outlived its release"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_guard_frees_the_lock_without_waiting_for_its_ttl() {
    let Some(etcd) = Etcd::any("a_dropped_guard_frees_the_lock_without_waiting_for_its_ttl") else {
        return;
    };
    let key = unique_key("dropped");
    let holder = Arc::new(
        EtcdBackend::connect(etcd.endpoints(), key.clone())
            .await
            .unwrap(),
    );
    let waiter = Arc::new(EtcdBackend::connect(etcd.endpoints(), key).await.unwrap());
    let stale = Duration::from_secs(3);
    let held = lock(&holder, stale, Duration::from_secs(1))
        .acquire()
        .await
        .unwrap();
    let ttl = holder.holding(held.owner()).unwrap().ttl;
    let waiting = lock(&waiter, stale, ttl + Duration::from_secs(5));
    assert!(waiting.try_acquire().await.unwrap().is_none());

    let dropped_at = Instant::now();
    drop(held);
    let taken = waiting.acquire().await.unwrap();
    // The drop revokes the lease in a task: the key goes at once, not
    // after the 3 s TTL (a lapse would still come within TTL + 1 s).
    let waited = dropped_at.elapsed();
    assert!(waited < ttl, "waited {waited:?}, TTL {ttl:?}");
    taken.release().await.unwrap();
}

/// Env vars that make `holder_process` a lock holder (see the next test).
const CHILD_ENDPOINTS: &str = "HELDLOCK_ETCD_TEST_CHILD_ENDPOINTS";
const CHILD_KEY: &str = "HELDLOCK_ETCD_TEST_CHILD_KEY";
/// The stale age of the child's lock: etcd's minimum TTL here.
const CHILD_STALE: Duration = Duration::from_secs(1);

/// Not a test of its own: the holder process that
/// `a_killed_holders_lease_lapses_and_a_waiter_takes_over_within_ttl` runs
/// and kills. It holds the lock, prints `HELD <ttl ms>` and waits for its
/// end. Without the variables it does nothing.
#[test]
fn holder_process() {
    let (Ok(endpoints), Ok(key)) = (std::env::var(CHILD_ENDPOINTS), std::env::var(CHILD_KEY))
    else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let endpoints: Vec<&str> = endpoints.split(',').collect();
        let backend = Arc::new(EtcdBackend::connect(&endpoints, key).await.unwrap());
        let held = lock(&backend, CHILD_STALE, Duration::from_secs(5))
            .acquire()
            .await
            .unwrap();
        let ttl = backend.holding(held.owner()).unwrap().ttl;
        println!("HELD {}", ttl.as_millis());
        // Held, heartbeating, until killed.
        std::future::pending::<()>().await;
    });
}

/// Kills the child if the test ends early (a panic included).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holders_lease_lapses_and_a_waiter_takes_over_within_ttl() {
    const NAME: &str = "a_killed_holders_lease_lapses_and_a_waiter_takes_over_within_ttl";
    let Some(etcd) = Etcd::any(NAME) else {
        return;
    };
    let key = unique_key("killed");
    let mut child = Killed(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "holder_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENDPOINTS, etcd.endpoints().join(","))
            .env(CHILD_KEY, &key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let reading = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            // The harness's `test holder_process ... ` comes first on the line.
            .find_map(|line| line.split_once("HELD ").map(|(_, ms)| ms.trim().to_owned()))
    });
    let ttl_ms: u64 = tokio::time::timeout(Duration::from_secs(30), reading)
        .await
        .expect("the holder process took the lock within 30 s")
        .unwrap()
        .expect("the holder process printed HELD (it failed otherwise: see its stderr)")
        .parse()
        .unwrap();
    let ttl = Duration::from_millis(ttl_ms);

    let waiter = Arc::new(EtcdBackend::connect(etcd.endpoints(), key).await.unwrap());
    let waiting = lock(&waiter, CHILD_STALE, ttl + Duration::from_secs(10));
    assert!(
        waiting.try_acquire().await.unwrap().is_none(),
        "the child holds it"
    );
    let killed_at = Instant::now();
    child.0.kill().unwrap();
    let _ = child.0.wait();
    let taken = waiting.acquire().await.unwrap();
    let waited = killed_at.elapsed();
    println!("took over {waited:?} after the kill (TTL {ttl:?})");
    // etcd deletes the key within TTL of the last keep-alive (checked every
    // 0.5 s), and the deletion wakes the waiter: within TTL + 1 s.
    assert!(
        waited <= ttl + Duration::from_secs(1),
        "waited {waited:?}, TTL {ttl:?}"
    );
    // And not before etcd ended the lease: the last keep-alive was at most
    // one heartbeat (stale / 3) before the kill. 0.2 s of slack for the
    // clocks of the two steps.
    let earliest = ttl.saturating_sub(CHILD_STALE / 3 + Duration::from_millis(200));
    assert!(waited >= earliest, "waited only {waited:?}, TTL {ttl:?}");
    taken.release().await.unwrap();
}
