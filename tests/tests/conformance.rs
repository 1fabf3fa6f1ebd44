//! The backend conformance suite (`heldlock-conformance`) on every backend of
//! heldlock, each under every runtime: one `run_all` per pair, so no backend
//! can skip a check. The file backend claims `listen` (inotify) wherever
//! inotify works; `MemoryBackend` cannot notify and does not claim it.

mod support;

use std::path::PathBuf;
use std::sync::Arc;

use heldlock_conformance::{
    BackendFactory, Capabilities, Outcome, Report, Resource, SharedClones, run_all,
};
use heldlock_core::{BackendError, LockBackend, MemoryBackend, Step};
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
        let backend = FsBackend::new(&self.path).map_err(|error| BackendError::Other {
            step: Step::Prepare,
            resource: self.path.display().to_string(),
            source: Box::new(error),
        })?;
        Ok(Arc::new(backend))
    }
}

impl BackendFactory for FsFactory {
    fn fresh(&self) -> Result<Box<dyn Resource>, BackendError> {
        let dir = tempfile::tempdir().map_err(|source| BackendError::Io {
            step: Step::Prepare,
            resource: "a temporary directory".into(),
            action: "create",
            source,
        })?;
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

/// The file backend's: `listen` too, where inotify works. Elsewhere its
/// `listen` is `None` and the check is skipped, which `SKIPPED` says.
fn fs_capabilities(test: &str) -> Capabilities {
    let inotify = rustix::fs::inotify::init(rustix::fs::inotify::CreateFlags::CLOEXEC).is_ok();
    if !inotify {
        support::skip(
            &format!("{test} (the listen check)"),
            "inotify unavailable here, so FsBackend cannot notify",
        );
    }
    CAPABILITIES.with_listen(inotify)
}

fn on_tokio<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build a tokio runtime")
        .block_on(f)
}

/// Every check passed, and every one ran (none skipped) unless `skipped`.
fn assert_passed(report: &Report, skipped: &[&str]) {
    assert!(report.passed(), "{report}");
    for (name, outcome) in report.outcomes() {
        let ran = matches!(outcome, Outcome::Passed);
        assert!(
            ran || skipped.contains(&name),
            "{name}: {outcome:?}\n{report}"
        );
    }
}

/// The file backend's report: passed, `listen` checked where inotify works.
fn assert_fs_passed(report: &Report, caps: Capabilities) {
    assert_passed(report, if caps.listen { &[] } else { &["listen"] });
}

#[test]
fn conformance_fs_backend_on_tokio() {
    let caps = fs_capabilities("conformance_fs_backend_on_tokio");
    let report = on_tokio(run_all(&FsFactory, caps));
    assert_fs_passed(&report, caps);
}

#[test]
fn conformance_fs_backend_on_async_std() {
    let caps = fs_capabilities("conformance_fs_backend_on_async_std");
    let report = async_std::task::block_on(run_all(&FsFactory, caps));
    assert_fs_passed(&report, caps);
}

#[test]
fn conformance_memory_backend_on_tokio() {
    let report = on_tokio(run_all(&MemoryFactory, CAPABILITIES));
    assert_passed(&report, &["listen"]);
}

#[test]
fn conformance_memory_backend_on_async_std() {
    let report = async_std::task::block_on(run_all(&MemoryFactory, CAPABILITIES));
    assert_passed(&report, &["listen"]);
}

#[test]
fn conformance_fs_backend_on_smol() {
    let caps = fs_capabilities("conformance_fs_backend_on_smol");
    let report = smol::block_on(run_all(&FsFactory, caps));
    assert_fs_passed(&report, caps);
}

#[test]
fn conformance_fs_backend_on_threads() {
    let caps = fs_capabilities("conformance_fs_backend_on_threads");
    let report = heldlock::blocking::block_on(run_all(&FsFactory, caps));
    assert_fs_passed(&report, caps);
}

#[test]
fn conformance_memory_backend_on_smol() {
    let report = smol::block_on(run_all(&MemoryFactory, CAPABILITIES));
    assert_passed(&report, &["listen"]);
}

#[test]
fn conformance_memory_backend_on_threads() {
    let report = heldlock::blocking::block_on(run_all(&MemoryFactory, CAPABILITIES));
    assert_passed(&report, &["listen"]);
}
