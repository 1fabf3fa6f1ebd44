//! A lock on an etcd key with the facade's `etcd` feature: acquire, write
//! carrying the grant's fencing token, release.
//!
//! ```sh
//! etcd &   # or any cluster: pass its client URLs, or set HELDLOCK_ETCD_ENDPOINTS
//! cargo run -p heldlock --features etcd --example etcd -- http://127.0.0.1:2379 locks/demo
//! ```
//!
//! Run it twice at once: the second waits for the first's release (woken by
//! a watch of the key) and prints a greater token.

use std::time::Duration;

use heldlock::LockOptions;
use heldlock::etcd::EtcdLock;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let endpoints = args
        .next()
        .or_else(|| std::env::var("HELDLOCK_ETCD_ENDPOINTS").ok())
        .unwrap_or_else(|| "http://127.0.0.1:2379".into());
    let endpoints: Vec<&str> = endpoints.split(',').collect();
    let key = args.next().unwrap_or_else(|| "locks/demo".into());

    // `stale` is the etcd lease's TTL: a holder that dies frees the lock
    // 10 s after its last heartbeat, by etcd's decision alone. The watch
    // wakes waiters at once; the poll is only a safety net.
    let options = LockOptions::new(Duration::from_secs(10))
        .max_wait(Duration::from_secs(60))
        .poll(Duration::from_secs(5));
    let lock = EtcdLock::connect(&endpoints, key, options).await?;

    let held = lock.acquire().await?;
    let token = held
        .fencing_token()
        .ok_or("etcd gives every grant a token")?;
    println!("holding {} (fencing token {token})", held.owner());

    // The critical section: check ownership right before each write, and
    // hand the token to the storage so it can refuse an older holder
    // (`examples/fencing.rs` shows the storage's side).
    tokio::time::sleep(Duration::from_secs(2)).await;
    if held.refresh().await? {
        println!("still ours: writing with token {token}");
    }

    held.release().await?;
    println!("released");
    Ok(())
}
