//! heldlock-conformance's `run_all` against a real etcd: the checks every
//! backend passes.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use heldlock_conformance::{BackendFactory, Capabilities, Resource, run_all};
use heldlock_core::{BackendError, LockBackend};
use heldlock_etcd::EtcdBackend;
use heldlock_etcd::etcd_client::Client;
use support::{Etcd, unique_key};

/// Each check gets a key of its own; each `open` is a new handle on it,
/// holding nothing, as another process would be.
struct Factory {
    client: Client,
}

struct Key {
    base: EtcdBackend,
}

impl Resource for Key {
    fn open(&self) -> Result<Arc<dyn LockBackend>, BackendError> {
        Ok(Arc::new(self.base.peer()))
    }
}

impl BackendFactory for Factory {
    fn fresh(&self) -> Result<Box<dyn Resource>, BackendError> {
        // Records the checks write declare no stale age: their leases get
        // this TTL, so that keys a check leaves behind soon lapse.
        let base = EtcdBackend::new(self.client.clone(), unique_key("conformance"))
            .with_default_ttl(Duration::from_secs(10));
        Ok(Box::new(Key { base }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_etcd_backend_on_tokio() {
    let Some(etcd) = Etcd::any("conformance_etcd_backend_on_tokio") else {
        return;
    };
    let factory = Factory {
        client: etcd.client().await,
    };
    // `release_blocking` returns None (a release is a request); `listen`
    // is a watch.
    let capabilities = Capabilities::new().with_listen(true);
    let report = run_all(&factory, capabilities).await;
    // Shown with --nocapture: which checks ran.
    println!("{report}");
    assert!(report.passed(), "{report}");
}
