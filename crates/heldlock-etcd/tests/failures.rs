//! etcd unreachable, refusing credentials, or restarting under a holder:
//! typed errors with what to check, no panic, no wait past `max_wait`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use heldlock_core::{Error, Lock, LockOptions, Released};
use heldlock_etcd::etcd_client::{Client, ConnectOptions};
use heldlock_etcd::{EtcdBackend, EtcdError};
use heldlock_tokio::TokioRuntime;
use support::{Etcd, unique_key};

/// An endpoint nothing listens on.
fn dead_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// The `EtcdError` in `error`'s chain of sources.
fn etcd_error(error: &Error) -> Option<&EtcdError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(found) = e.downcast_ref::<EtcdError>() {
            return Some(found);
        }
        source = e.source();
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_etcd_fails_with_what_to_check_and_no_hang() {
    let endpoint = dead_endpoint();
    let started = Instant::now();
    let error = EtcdBackend::connect(&[&endpoint], "k").await.unwrap_err();
    assert!(
        matches!(
            error,
            EtcdError::Unreachable { .. } | EtcdError::Timeout { .. }
        ),
        "{error}"
    );
    assert!(error.to_string().contains(&endpoint), "{error}");
    assert!(error.to_string().contains("etcdctl"), "{error}");
    // The connect timeout is 5 s.
    assert!(
        started.elapsed() < Duration::from_secs(7),
        "{:?}",
        started.elapsed()
    );

    // A client made without a request (no credentials), and a lock on it:
    // acquire ends within max_wait with a typed error.
    let client = Client::connect([endpoint.as_str()], None).await.unwrap();
    let backend = EtcdBackend::new(client, "k").with_request_timeout(Duration::from_millis(500));
    let max_wait = Duration::from_secs(2);
    let options = LockOptions::new(Duration::from_secs(1)).max_wait(max_wait);
    let lock = Lock::new(Arc::new(backend), Arc::new(TokioRuntime), options).unwrap();
    let started = Instant::now();
    let error = lock.acquire().await.unwrap_err();
    // max_wait, plus the core's grace of one poll (50 ms) and slack.
    assert!(started.elapsed() < max_wait + Duration::from_secs(1));
    match &error {
        Error::Backend(_) => {
            let found = etcd_error(&error).expect("an EtcdError in the chain");
            assert!(
                matches!(
                    found,
                    EtcdError::Unreachable { .. } | EtcdError::Timeout { .. }
                ),
                "{error}"
            );
        }
        Error::Timeout { .. } => {}
        other => panic!("unexpected error: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_an_auth_error() {
    // Enables authentication: on an etcd of its own only.
    let Some(etcd) = Etcd::own("refused_credentials_are_an_auth_error") else {
        return;
    };
    let mut root = etcd.client().await;
    // The root role may be built in (3.5); adding it again is refused.
    let _ = root.role_add("root").await;
    root.user_add("root", "rootpw", None).await.unwrap();
    root.user_grant_role("root", "root").await.unwrap();
    root.auth_enable().await.unwrap();
    let key = unique_key("auth");

    let wrong = ConnectOptions::new().with_user("root", "wrong");
    let error = EtcdBackend::connect_with(etcd.endpoints(), key.clone(), wrong)
        .await
        .unwrap_err();
    assert!(matches!(error, EtcdError::Auth { .. }), "{error:?}");
    assert!(error.to_string().contains("with_user"), "{error}");

    let error = EtcdBackend::connect(etcd.endpoints(), key.clone())
        .await
        .unwrap_err();
    assert!(matches!(error, EtcdError::Auth { .. }), "{error:?}");

    let right = ConnectOptions::new().with_user("root", "rootpw");
    let backend = EtcdBackend::connect_with(etcd.endpoints(), key, right)
        .await
        .unwrap();
    let options = LockOptions::new(Duration::from_secs(2));
    let lock = Lock::new(Arc::new(backend), Arc::new(TokioRuntime), options).unwrap();
    let held = lock.acquire().await.unwrap();
    assert_eq!(held.release().await.unwrap(), Released::Released);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_keeps_its_lock_across_an_etcd_restart() {
    // Restarts etcd: on an etcd of its own only.
    let Some(mut etcd) = Etcd::own("a_holder_keeps_its_lock_across_an_etcd_restart") else {
        return;
    };
    let key = unique_key("restart");
    let backend = Arc::new(
        EtcdBackend::connect(etcd.endpoints(), key.clone())
            .await
            .unwrap(),
    );
    // Long enough for a restart (about 0.2 s) to fit between heartbeats
    // with room to spare.
    let options = LockOptions::new(Duration::from_secs(6)).max_wait(Duration::from_secs(1));
    let lock = Lock::new(backend.clone(), Arc::new(TokioRuntime), options.clone()).unwrap();
    let held = lock.acquire().await.unwrap();
    let holding = backend.holding(held.owner()).unwrap();

    // Killed as by a crash, then started on the same data: etcd keeps the
    // key and its lease (and gives the lease a full TTL as it elects itself).
    tokio::task::block_in_place(|| etcd.restart());

    // The holder's connection comes back by itself: its next refresh
    // succeeds, on the same key instance.
    assert!(
        held.refresh().await.unwrap(),
        "still ours after the restart"
    );
    assert!(!held.is_lost());
    assert_eq!(backend.holding(held.owner()), Some(holding));
    let peer = Arc::new(EtcdBackend::connect(etcd.endpoints(), key).await.unwrap());
    let other = Lock::new(peer, Arc::new(TokioRuntime), options).unwrap();
    assert!(other.try_acquire().await.unwrap().is_none(), "still held");
    let before = held.fencing_token().unwrap();
    assert_eq!(held.release().await.unwrap(), Released::Released);
    let after = other
        .try_acquire()
        .await
        .unwrap()
        .expect("free after release");
    // Revisions live in etcd's data: a restart does not reset the tokens.
    assert!(after.fencing_token().unwrap() > before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_lock_that_cannot_connect_says_so_as_a_lock_error() {
    type EtcdLock = heldlock_etcd::EtcdLock<TokioRuntime>;
    let endpoint = dead_endpoint();
    let options = LockOptions::new(Duration::from_secs(2));
    let error = EtcdLock::connect(&[&endpoint], "k", options.clone())
        .await
        .unwrap_err();
    match &error {
        Error::Backend(backend) => assert_eq!(backend.step(), heldlock_core::Step::Prepare),
        other => panic!("unexpected error: {other}"),
    }
    assert!(
        matches!(
            etcd_error(&error),
            Some(EtcdError::Unreachable { .. } | EtcdError::Timeout { .. })
        ),
        "{error}"
    );
    let text = error.to_string();
    assert!(
        text.contains("`k` on etcd at") && text.contains(&endpoint),
        "{text}"
    );

    // Bad input fails before anything is sent.
    let error = EtcdLock::connect(&[&endpoint], "", options)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidResource { .. }), "{error}");
}
