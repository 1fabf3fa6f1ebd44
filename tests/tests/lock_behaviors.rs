//! The held-file-lock behaviours of the reference (BEHAVIORS.md lines 12-34),
//! each on tokio, async-std, smol and plain threads (the blocking API's
//! runtime). Pure option checks (19, 20, 22, 23) also
//! have machine-level tests in heldlock-core (`lock_machines.rs`); those that
//! need a window inside one protocol step are backend tests of heldlock-fs:
//! 15 in `protocol/`, and 18, 31, 32 and 34 in `races/`, whose hooked
//! `Vfs` runs a peer's action between two steps. `cargo test behavior_NN`
//! finds each.
#![allow(clippy::unwrap_used)]

mod support;

use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::future::join_all;
use heldlock_core::{Error, Holder, LockOptions, Released};
use heldlock_fs::FileLock;
use support::*;

const MS: Duration = Duration::from_millis(1);

fn options() -> LockOptions {
    LockOptions::new(Duration::from_secs(5))
}

on_every_runtime! {
    async fn behavior_12_acquire_runs_the_task_holding_a_record_then_removes_it<R>() {
        let (_dir, path) = lock_path();
        let lock = FileLock::<R>::new(&path, options()).unwrap();
        let seen = lock
            .with_lock(|state| {
                let path = path.clone();
                async move {
                    assert!(state.acquired());
                    fs::read_to_string(&path).unwrap()
                }
            })
            .await;
        let fields: Vec<&str> = seen.split_whitespace().collect();
        assert_eq!(fields[0], std::process::id().to_string());
        assert_eq!(fields[1].len(), 36, "a hyphenated UUID owner: {seen}");
        assert!(humantime::parse_rfc3339(fields[2]).is_ok(), "an RFC 3339 time: {seen}");
        assert!(!path.exists(), "the lock file is gone after the task");
    }

    async fn behavior_13_five_concurrent_holders_never_overlap<R>() {
        let (_dir, path) = lock_path();
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let holders = (0..5).map(|_| {
            let lock = FileLock::<R>::new(&path, options().poll(MS)).unwrap();
            let (inside, most) = (inside.clone(), most.clone());
            async move {
                lock.with_lock(|state| async move {
                    assert!(state.acquired());
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    R::default().sleep(5 * MS).await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                })
                .await
            }
        });
        join_all(holders).await;
        assert_eq!(most.load(Ordering::SeqCst), 1);
        assert!(!path.exists());
    }

    async fn behavior_14_a_sixty_second_old_lock_is_broken_and_acquired<R>() {
        let (dir, path) = lock_path();
        write_reference_lock(&path, 1, OTHER_OWNER, ago(Duration::from_secs(60)));
        set_mtime(&path, ago(Duration::from_secs(60)));
        let lock = FileLock::<R>::new(&path, options()).unwrap();
        let acquired = lock.with_lock(|state| async move { state.acquired() }).await;
        assert!(acquired);
        assert!(!path.exists());
        assert!(trash_in(dir.path()).is_empty());
    }

    async fn behavior_16_a_fresh_foreign_lock_is_not_broken<R>() {
        let (_dir, path) = lock_path();
        let content = write_reference_lock(&path, 1, OTHER_OWNER, std::time::SystemTime::now());
        let lock = FileLock::<R>::new(&path, options().max_wait(300 * MS)).unwrap();
        let started = Instant::now();
        let acquired = lock.with_lock(|state| async move { state.acquired() }).await;
        // Real time is what is tested: 300 ms of waiting must end well under 2 s.
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(!acquired, "the task ran without the lock");
        assert_eq!(fs::read_to_string(&path).unwrap(), content, "the foreign lock is unchanged");
    }

    async fn behavior_17_release_never_removes_a_replacement<R>() {
        let (dir, path) = lock_path();
        let lock = FileLock::<R>::new(&path, options()).unwrap();
        let held = lock.acquire().await.unwrap();
        let replacement = replace_lock(&path, OTHER_OWNER, std::time::SystemTime::now());
        assert_eq!(held.release().await.unwrap(), Released::NotOurs);
        assert_eq!(fs::read_to_string(&path).unwrap(), replacement);
        assert!(trash_in(dir.path()).is_empty(), "no .releasing. trash is left");
    }

    async fn behavior_19_an_empty_path_is_refused<R>() {
        let error = FileLock::<R>::new("", options()).unwrap_err();
        assert!(matches!(error, Error::InvalidResource { .. }), "{error}");
        let error = FileLock::<R>::new("x.lock", LockOptions::new(Duration::ZERO)).unwrap_err();
        assert!(matches!(error, Error::Options(_)), "{error}");
    }

    async fn behavior_21_a_one_millisecond_wait_times_out_cleanly<R>() {
        let (_dir, path) = lock_path();
        write_reference_lock(&path, 77, OTHER_OWNER, std::time::SystemTime::now());
        let lock = FileLock::<R>::new(&path, options().max_wait(MS)).unwrap();
        match lock.acquire().await {
            Err(Error::Timeout { holder: Some(Holder::Record(record)), waited, resource }) => {
                assert_eq!(record.pid, 77);
                assert_eq!(record.owner.as_str(), OTHER_OWNER);
                assert!(waited >= MS);
                assert!(resource.contains("state.lock"), "{resource}");
            }
            other => panic!("expected a timeout naming the holder, got {other:?}"),
        }
        assert!(!lock.with_lock(|state| async move { state.acquired() }).await);
    }

    async fn behavior_22_a_poll_larger_than_the_wait_is_capped<R>() {
        let (_dir, path) = lock_path();
        write_reference_lock(&path, 1, OTHER_OWNER, std::time::SystemTime::now());
        let lock = FileLock::<R>::new(&path, options().poll(Duration::from_secs(60)).max_wait(200 * MS)).unwrap();
        let started = Instant::now();
        assert!(lock.acquire().await.is_err());
        // Real time is what is tested: a 60 s poll must not outlive a 200 ms wait.
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    async fn behavior_24_missing_parent_directories_are_created<R>() {
        let (dir, _) = lock_path();
        let path = dir.path().join("a/b/c/state.lock");
        let lock = FileLock::<R>::new(&path, options()).unwrap();
        let held = lock.acquire().await.unwrap();
        assert!(path.exists());
        held.release().await.unwrap();
    }

    async fn behavior_25_a_heartbeating_holder_is_not_broken<R>() {
        let (_dir, path) = lock_path();
        // Real time is what is tested: a hold longer than `stale` that only
        // the heartbeat keeps fresh. Not a guessed sleep: the hold lasts
        // until the heartbeat has stamped the lock 1.5 stale after the
        // acquire; `stale` leaves the heartbeat (every 50 ms) half a second
        // of slack on a busy machine.
        let stale = 600 * MS;
        let quick = LockOptions::new(stale).heartbeat(50 * MS);
        let holder = FileLock::<R>::new(&path, quick.clone()).unwrap();
        let before = std::time::SystemTime::now();
        let held = holder.acquire().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while mtime(&path) < before + stale * 3 / 2 {
            assert!(Instant::now() < deadline, "the heartbeat never stamped the lock");
            R::default().sleep(10 * MS).await;
        }
        let contender = FileLock::<R>::new(&path, quick.max_wait(150 * MS)).unwrap();
        let acquired = contender.with_lock(|state| async move { state.acquired() }).await;
        assert!(!acquired, "the contender must not break a live holder");
        assert!(held.refresh().await.unwrap(), "the holder still owns its lock");
        held.release().await.unwrap();
    }

    async fn behavior_26_task_runs_unlocked_when_the_lock_directory_cannot_be_made<R>() {
        let (dir, _) = lock_path();
        let blocker = dir.path().join("not-a-dir");
        fs::write(&blocker, "a file where a directory should be").unwrap();
        let lock = FileLock::<R>::new(blocker.join("state.lock"), options()).unwrap();
        assert!(matches!(lock.acquire().await, Err(Error::Backend(_))));
        let ran = lock.with_lock(|state| async move { (state.acquired(), "ran") }).await;
        assert_eq!(ran, (false, "ran"));
    }

    async fn behavior_27_a_panicking_warning_hook_never_breaks_the_operation<R>() {
        let (_dir, path) = lock_path();
        write_reference_lock(&path, 1, OTHER_OWNER, std::time::SystemTime::now());
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let lock = FileLock::<R>::new(
            &path,
            options().max_wait(MS).on_warning(move |_| {
                counted.fetch_add(1, Ordering::SeqCst);
                panic!("a broken warning hook");
            }),
        )
        .unwrap();
        let value = lock.with_lock(|_| async { 7 }).await;
        assert_eq!(value, 7);
        assert!(calls.load(Ordering::SeqCst) >= 1, "the hook was called");
    }

    async fn behavior_28_the_heartbeat_never_refreshes_a_replacement<R>() {
        let (_dir, path) = lock_path();
        let lock = FileLock::<R>::new(&path, LockOptions::new(300 * MS).heartbeat(20 * MS)).unwrap();
        let held = lock.acquire().await.unwrap();
        let old = ago(Duration::from_secs(10));
        replace_lock(&path, OTHER_OWNER, old);
        // Several heartbeats pass; `lost()` fires at the first one.
        held.lost().await;
        R::default().sleep(100 * MS).await;
        assert_eq!(mtime(&path), old, "the replacement's mtime was never touched");
        assert!(held.is_lost());
        assert_eq!(held.release().await.unwrap(), Released::NotOurs);
    }

    async fn behavior_29_refresh_while_held_restamps_and_reports_held<R>() {
        let (_dir, path) = lock_path();
        let lock = FileLock::<R>::new(&path, options()).unwrap();
        let held = lock.acquire().await.unwrap();
        set_mtime(&path, ago(Duration::from_secs(60)));
        assert!(held.refresh().await.unwrap());
        assert!(mtime(&path) > ago(Duration::from_secs(5)), "re-stamped");
        held.release().await.unwrap();
    }

    async fn behavior_30_refresh_after_a_replacement_reports_lost_and_touches_nothing<R>() {
        let (_dir, path) = lock_path();
        let lock = FileLock::<R>::new(&path, options()).unwrap();
        let held = lock.acquire().await.unwrap();
        let old = ago(Duration::from_secs(60));
        let replacement = replace_lock(&path, OTHER_OWNER, old);
        assert!(!held.refresh().await.unwrap());
        assert!(held.is_lost());
        assert_eq!(mtime(&path), old);
        assert_eq!(fs::read_to_string(&path).unwrap(), replacement);
    }

    async fn behavior_33_breaking_a_stale_lock_leaves_no_trash<R>() {
        let (dir, path) = lock_path();
        write_reference_lock(&path, 1, OTHER_OWNER, ago(Duration::from_secs(60)));
        set_mtime(&path, ago(Duration::from_secs(60)));
        let lock = FileLock::<R>::new(&path, options()).unwrap();
        let held = lock.acquire().await.unwrap();
        assert!(trash_in(dir.path()).is_empty());
        held.release().await.unwrap();
        assert!(trash_in(dir.path()).is_empty());
    }

    async fn interop_a_fresh_reference_lock_is_honoured<R>() {
        // Exactly what the TypeScript reference writes: `<pid> <uuid> <iso>\n`.
        let (_dir, path) = lock_path();
        let content = write_reference_lock(&path, 31337, OTHER_OWNER, std::time::SystemTime::now());
        let lock = FileLock::<R>::new(&path, options().max_wait(20 * MS)).unwrap();
        match lock.acquire().await {
            Err(Error::Timeout { holder: Some(Holder::Record(record)), .. }) => {
                assert_eq!((record.pid, record.owner.as_str()), (31337, OTHER_OWNER));
                assert!(record.fields.is_empty(), "the reference writes no fields");
            }
            other => panic!("a fresh reference lock must be honoured, got {other:?}"),
        }
        assert_eq!(fs::read_to_string(&path).unwrap(), content);
    }

    async fn interop_a_stale_reference_lock_is_broken<R>() {
        let (dir, path) = lock_path();
        write_reference_lock(&path, 31337, OTHER_OWNER, ago(Duration::from_secs(30)));
        set_mtime(&path, ago(Duration::from_secs(30)));
        let lock = FileLock::<R>::new(&path, options()).unwrap();
        let held = lock.acquire().await.unwrap();
        let ours = fs::read_to_string(&path).unwrap();
        assert!(ours.contains(held.owner().as_str()));
        held.release().await.unwrap();
        assert!(trash_in(dir.path()).is_empty());
    }

    async fn dropping_the_guard_releases<R>() {
        let (_dir, path) = lock_path();
        let lock = FileLock::<R>::new(&path, options()).unwrap();
        let held = lock.acquire().await.unwrap();
        drop(held);
        assert!(!path.exists());
        assert!(lock.try_acquire().await.unwrap().is_some());
    }

    async fn a_panicking_task_still_releases<R>() {
        use futures::FutureExt;
        let (_dir, path) = lock_path();
        let lock = FileLock::<R>::new(&path, options()).unwrap();
        let outcome = std::panic::AssertUnwindSafe(lock.with_lock(|_| async { panic!("task panicked on purpose") }))
            .catch_unwind()
            .await;
        assert!(outcome.is_err());
        assert!(!path.exists(), "released while unwinding");
    }
}

/// A synchronous caller that drives each call with `block_on` on a
/// current-thread runtime never lets that runtime idle: every call completes
/// at its first poll. The heartbeat of each acquisition must still end with
/// its release, not pile up in the runtime until it is dropped.
#[test]
fn block_on_per_call_leaves_no_heartbeat_tasks_behind() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (_dir, path) = lock_path();
    let lock = FileLock::<heldlock_tokio::TokioRuntime>::new(&path, options()).unwrap();
    for _ in 0..100 {
        let held = runtime.block_on(lock.acquire()).unwrap();
        assert_eq!(
            runtime.block_on(held.release()).unwrap(),
            Released::Released
        );
    }
    let alive = runtime.metrics().num_alive_tasks();
    assert!(alive <= 1, "{alive} tasks alive after 100 acquisitions");
}
