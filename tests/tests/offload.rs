//! The backend conformance suite on `heldlock_fs::Offload`: moving every step
//! to a worker thread must not change what a backend promises. Run on tokio
//! and on plain threads, the two ways its answers reach a caller (a runtime's
//! waker, a parked thread).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

use heldlock_conformance::{BackendFactory, Capabilities, Resource, run_all};
use heldlock_core::{BackendError, LockBackend, MemoryBackend};
use heldlock_fs::{FsBackend, Offload};

/// Each `open` is a new `FsBackend` on the same path, as another process
/// would have, each with a worker of its own.
struct OffloadFs;

struct OffloadFsResource {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Resource for OffloadFsResource {
    fn open(&self) -> Result<Arc<dyn LockBackend>, BackendError> {
        Ok(Arc::new(Offload::new(FsBackend::new(&self.path).unwrap())))
    }
}

impl BackendFactory for OffloadFs {
    fn fresh(&self) -> Result<Box<dyn Resource>, BackendError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conformance.lock");
        Ok(Box::new(OffloadFsResource { _dir: dir, path }))
    }
}

struct OffloadMemory;

struct OffloadMemoryResource(MemoryBackend);

impl Resource for OffloadMemoryResource {
    fn open(&self) -> Result<Arc<dyn LockBackend>, BackendError> {
        Ok(Arc::new(Offload::new(self.0.clone())))
    }
}

impl BackendFactory for OffloadMemory {
    fn fresh(&self) -> Result<Box<dyn Resource>, BackendError> {
        Ok(Box::new(OffloadMemoryResource(MemoryBackend::new(
            "conformance",
        ))))
    }
}

const CAPABILITIES: Capabilities = Capabilities::new().with_release_blocking(true);

fn on_tokio<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn conformance_offloaded_fs_backend_on_tokio() {
    let report = on_tokio(run_all(&OffloadFs, CAPABILITIES));
    assert!(report.passed(), "{report}");
}

#[test]
fn conformance_offloaded_fs_backend_on_threads() {
    let report = heldlock::blocking::block_on(run_all(&OffloadFs, CAPABILITIES));
    assert!(report.passed(), "{report}");
}

#[test]
fn conformance_offloaded_memory_backend_on_tokio() {
    let report = on_tokio(run_all(&OffloadMemory, CAPABILITIES));
    assert!(report.passed(), "{report}");
}

#[test]
fn an_offloaded_waiter_is_woken_by_the_release_not_its_poll() {
    // Real time: inotify and the worker threads are real. The waiter's poll
    // is 10 s; a wake-up within 5 s can only come from the release
    // notification, subscribed to on the worker.
    use std::time::{Duration, Instant};

    use heldlock_core::{Lock, LockOptions};
    use heldlock_tokio::TokioRuntime;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("woken.lock");
    let options = LockOptions::new(Duration::from_secs(30))
        .poll(Duration::from_secs(10))
        .max_wait(Duration::from_secs(20));
    let lock = || {
        let backend = Offload::new(FsBackend::new(&path).unwrap());
        Lock::new(Arc::new(backend), Arc::new(TokioRuntime), options.clone()).unwrap()
    };
    let (holder, waiter) = (lock(), lock());
    on_tokio(async {
        let held = holder.acquire().await.unwrap();
        let waiting = tokio::spawn(async move {
            let start = Instant::now();
            let held = waiter.acquire().await.unwrap();
            let waited = start.elapsed();
            held.release().await.unwrap();
            waited
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        held.release().await.unwrap();
        let waited = waiting.await.unwrap();
        assert!(waited < Duration::from_secs(5), "{waited:?}");
    });
}
