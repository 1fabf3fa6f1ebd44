//! Keyed serialization: read-modify-write cycles on one key never interleave,
//! cycles on different keys run concurrently, and a failing cycle does not
//! block the ones behind it.
//!
//! `cargo run -p heldlock --example serializer`

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use heldlock::Serializer;

#[tokio::main]
async fn main() {
    let serializer = Serializer::new();
    let store: Arc<Mutex<HashMap<&str, u64>>> = Arc::default();

    // 100 increments of two counters, all started at once.
    let mut tasks = Vec::new();
    for i in 0..100 {
        let key = if i % 2 == 0 { "even" } else { "odd" };
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(serializer.serialize(key, async move {
            let current = store
                .lock()
                .expect("no task panicked while holding the store")
                .get(key)
                .copied()
                .unwrap_or(0); // read
            tokio::task::yield_now().await; // other tasks run here...
            store
                .lock()
                .expect("no task panicked while holding the store")
                .insert(key, current + 1); // ...yet no update is lost
            if i == 7 {
                return Err("cycle 7 failed"); // and a failure blocks nobody
            }
            Ok(())
        })));
    }
    let mut failures = 0;
    for task in tasks {
        if task.await.expect("no task panicked").is_err() {
            failures += 1;
        }
    }
    let store = store
        .lock()
        .expect("no task panicked while holding the store");
    println!(
        "even = {}, odd = {}, failed cycles = {failures}",
        store["even"], store["odd"]
    );
    assert_eq!((store["even"], store["odd"]), (50, 50));
    assert_eq!(serializer.pending_keys(), 0, "idle keys are forgotten");
}
