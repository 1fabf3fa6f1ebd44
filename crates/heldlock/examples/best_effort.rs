//! The reference implementation's semantics: run the task under the lock when
//! it can be had within `max_wait`, and otherwise run it anyway, unlocked, and
//! let it decide what to skip.
//!
//! `cargo run -p heldlock --example best_effort`

use std::time::Duration;

use heldlock::{FileLock, LockOptions};

#[tokio::main]
async fn main() -> Result<(), heldlock::Error> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("catalog.lock");
    let options = LockOptions::new(Duration::from_secs(30)).max_wait(Duration::from_millis(200));

    // Another holder keeps the lock for the whole example.
    let holder = FileLock::new(&path, options.clone())?.acquire().await?;

    let lock = FileLock::new(&path, options)?;
    let outcome = lock
        .with_lock(|state| async move {
            if state.acquired() {
                "rebuilt the catalog under the lock"
            } else {
                "lock busy: touched only what is safe without it"
            }
        })
        .await;
    println!("{outcome}");
    assert_eq!(outcome, "lock busy: touched only what is safe without it");

    holder.release().await?;
    Ok(())
}
