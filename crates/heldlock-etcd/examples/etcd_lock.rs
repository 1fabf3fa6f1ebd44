//! Holds a lock on etcd with the core's generic `Lock`, the way
//! `heldlock-tokio` builds its `FileLock` over the file backend.
//!
//! ```sh
//! etcd &   # or any cluster: pass its client URL
//! cargo run -p heldlock-etcd --example etcd_lock -- http://127.0.0.1:2379 locks/demo
//! ```
//!
//! Run it twice at once: the second waits for the first's release (woken by
//! a watch), and prints a greater fencing token.

use std::sync::Arc;
use std::time::Duration;

use heldlock_core::{Lock, LockOptions};
use heldlock_etcd::EtcdBackend;
use heldlock_tokio::TokioRuntime;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let endpoint = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:2379".into());
    let key = args.next().unwrap_or_else(|| "locks/demo".into());

    // A handle on the backend tells what etcd knows (`holding`: the lease).
    let backend = Arc::new(EtcdBackend::connect(&[endpoint], key).await?);
    // `stale` is the lease's TTL: a holder that dies frees the lock 10 s
    // after its last heartbeat, by etcd's decision alone. The watch wakes
    // waiters, so the poll is only a safety net.
    let options = LockOptions::new(Duration::from_secs(10))
        .max_wait(Duration::from_secs(60))
        .poll(Duration::from_secs(5));
    let lock = Lock::new(backend.clone(), Arc::new(TokioRuntime), options)?;

    let held = lock.acquire().await?;
    // The key's create revision, as the core's fencing token.
    let token = held
        .fencing_token()
        .ok_or("etcd gives every grant a token")?;
    let lease = backend.holding(held.owner()).map(|h| h.lease_id);
    println!(
        "holding {} (fencing token {token}, lease {lease:x?})",
        held.owner()
    );

    // The critical section: check ownership right before each write, and
    // hand the token to the storage so it can refuse an older holder.
    tokio::time::sleep(Duration::from_secs(2)).await;
    if held.refresh().await? {
        println!("still ours: writing with token {token}");
    }

    held.release().await?;
    println!("released");
    Ok(())
}
