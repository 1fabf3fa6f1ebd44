//! A held file lock guarding a read-modify-write of a state file, with
//! `refresh()` right before the write, so a holder that lost the lock (a long
//! pause let a peer break it) skips its write instead of clobbering the peer's.
//!
//! `cargo run -p heldlock --example refresh_before_write`

use std::time::Duration;

use heldlock::{FileLock, LockOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("counter.txt");
    let lock = FileLock::new(
        dir.path().join("counter.lock"),
        LockOptions::new(Duration::from_secs(10)).max_wait(Duration::from_secs(5)),
    )?;

    for _ in 0..3 {
        let held = lock.acquire().await?;
        let count: u64 = match tokio::fs::read_to_string(&state).await {
            Ok(text) => text.trim().parse()?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e.into()),
        };
        // ... a long computation could run here ...
        if held.refresh().await? {
            tokio::fs::write(&state, format!("{}\n", count + 1)).await?;
        } else {
            eprintln!("lost the lock before writing; the write is skipped");
        }
        held.release().await?;
    }
    let final_count = tokio::fs::read_to_string(&state).await?;
    println!("counter = {}", final_count.trim());
    assert_eq!(final_count.trim(), "3");
    Ok(())
}
