//! Cargo features are additive: a program written for smol against
//! `heldlock::smol::FileLock` keeps working when some other crate in the
//! graph turns heldlock's `tokio` feature on (Cargo unifies features).
//!
//! This test is that program. heldlock's dev-dependency on itself turns
//! `smol` on; `tokio` is on too in every ordinary build (`cargo test -p
//! heldlock`, where it is the default feature, and `cargo test --workspace`,
//! where the workspace unifies all three runtimes), which is exactly the
//! case of the bug: before, `heldlock::FileLock` switched to tokio's lock
//! there and a smol program panicked with "no reactor running". Under
//! `cargo test -p heldlock --no-default-features` it runs smol-only.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use heldlock::smol::FileLock;
use heldlock::{Inspection, LockOptions, Released};

fn mtime(path: &Path) -> SystemTime {
    fs::metadata(path).unwrap().modified().unwrap()
}

/// With `tokio` on, the top-level name is tokio's lock, and smol's path is
/// still smol's: each path means one thing, whichever features are on.
#[cfg(feature = "tokio")]
const _: fn(heldlock::tokio::FileLock) -> heldlock::FileLock = |lock| lock;

#[test]
fn a_smol_program_runs_on_smol_whatever_features_are_on() {
    eprintln!(
        "heldlock features in this build: tokio={} smol={} async-std={}",
        cfg!(feature = "tokio"),
        cfg!(feature = "smol"),
        cfg!(feature = "async-std"),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.lock");
    let options = || {
        LockOptions::new(Duration::from_secs(30))
            .heartbeat(Duration::from_millis(100))
            .max_wait(Duration::from_millis(300))
    };

    smol::block_on(async {
        // A smol program: no tokio runtime anywhere, so a lock that needed
        // one would panic here.
        assert!(tokio::runtime::Handle::try_current().is_err());

        let lock = FileLock::new(&path, options()).unwrap();
        let held = lock.acquire().await.unwrap();
        assert!(matches!(
            lock.inspect().await.unwrap(),
            Inspection::Present(_)
        ));

        // The heartbeat runs on smol's executor (a tokio spawn would panic):
        // it touches the lock file while we wait on smol timers. Polled up to
        // 10 s (the heartbeat is every 100 ms), so a slow machine is no failure.
        let before = mtime(&path);
        let started = Instant::now();
        while mtime(&path) <= before {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the heartbeat did not refresh the lock within 10 s"
            );
            smol::Timer::after(Duration::from_millis(20)).await;
        }
        assert!(held.refresh().await.unwrap());
        assert!(!held.is_lost());

        let peer = FileLock::new(&path, options()).unwrap();
        assert!(peer.try_acquire().await.unwrap().is_none(), "held: busy");

        assert_eq!(held.release().await.unwrap(), Released::Released);
        assert!(!path.exists());
        let taken = peer.acquire().await.unwrap();
        assert_eq!(taken.release().await.unwrap(), Released::Released);
    });
    assert!(!path.exists());
}

#[cfg(feature = "tokio")]
#[test]
fn the_top_level_name_is_tokios_never_smols() {
    use std::any::TypeId;
    assert_eq!(
        TypeId::of::<heldlock::FileLock>(),
        TypeId::of::<heldlock::tokio::FileLock>()
    );
    assert_ne!(TypeId::of::<heldlock::FileLock>(), TypeId::of::<FileLock>());
}
