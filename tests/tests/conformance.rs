//! The backend conformance suite (`heldlock-conformance`) on every backend of
//! heldlock, each under every runtime: one `run_all` per pair, so no backend
//! can skip a check.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;
use std::sync::Arc;

use heldlock_conformance::{BackendFactory, Capabilities, Resource, SharedClones, run_all};
use heldlock_core::{BackendError, LockBackend, MemoryBackend};
use heldlock_fs::FsBackend;

/// Each check gets a fresh directory; each `open` is a new `FsBackend` on the
/// same path, as another process would have.
struct FsFactory;

struct FsResource {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Resource for FsResource {
    fn open(&self) -> Result<Arc<dyn LockBackend>, BackendError> {
        Ok(Arc::new(FsBackend::new(&self.path).unwrap()))
    }
}

impl BackendFactory for FsFactory {
    fn fresh(&self) -> Result<Box<dyn Resource>, BackendError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conformance.lock");
        Ok(Box::new(FsResource { _dir: dir, path }))
    }
}

struct MemoryFactory;

impl BackendFactory for MemoryFactory {
    fn fresh(&self) -> Result<Box<dyn Resource>, BackendError> {
        Ok(Box::new(SharedClones(MemoryBackend::new("conformance"))))
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
fn conformance_fs_backend_on_tokio() {
    let report = on_tokio(run_all(&FsFactory, CAPABILITIES));
    assert!(report.passed(), "{report}");
}

#[test]
fn conformance_fs_backend_on_async_std() {
    let report = async_std::task::block_on(run_all(&FsFactory, CAPABILITIES));
    assert!(report.passed(), "{report}");
}

#[test]
fn conformance_memory_backend_on_tokio() {
    let report = on_tokio(run_all(&MemoryFactory, CAPABILITIES));
    assert!(report.passed(), "{report}");
}

#[test]
fn conformance_memory_backend_on_async_std() {
    let report = async_std::task::block_on(run_all(&MemoryFactory, CAPABILITIES));
    assert!(report.passed(), "{report}");
}

#[test]
fn conformance_fs_backend_on_smol() {
    let report = smol::block_on(run_all(&FsFactory, CAPABILITIES));
    assert!(report.passed(), "{report}");
}

#[test]
fn conformance_fs_backend_on_threads() {
    let report = heldlock::blocking::block_on(run_all(&FsFactory, CAPABILITIES));
    assert!(report.passed(), "{report}");
}

#[test]
fn conformance_memory_backend_on_smol() {
    let report = smol::block_on(run_all(&MemoryFactory, CAPABILITIES));
    assert!(report.passed(), "{report}");
}

#[test]
fn conformance_memory_backend_on_threads() {
    let report = heldlock::blocking::block_on(run_all(&MemoryFactory, CAPABILITIES));
    assert!(report.passed(), "{report}");
}
