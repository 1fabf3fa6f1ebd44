//! Helpers shared by the cross-crate tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Runs `async fn body<R: Runtime + Default>()` on every runtime heldlock
/// supports, each with its own runtime type: tokio (multi-thread), async-std,
/// smol, and plain threads (the blocking API's runtime).
#[macro_export]
macro_rules! on_every_runtime {
    ($(async fn $name:ident<$r:ident>() $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn body<$r: heldlock_core::Runtime + Default>() $body

            #[test]
            fn tokio() {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("build a tokio runtime")
                    .block_on(body::<heldlock_tokio::TokioRuntime>());
            }

            #[test]
            fn async_std() {
                async_std::task::block_on(body::<heldlock_async_std::AsyncStdRuntime>());
            }

            #[test]
            fn smol() {
                smol::block_on(body::<heldlock_smol::SmolRuntime>());
            }

            #[test]
            fn threads() {
                heldlock::blocking::block_on(body::<heldlock::blocking::ThreadRuntime>());
            }
        }
    )*};
}

/// A lock path in a fresh temporary directory (kept alive by the returned guard).
pub fn lock_path() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.lock");
    (dir, path)
}

/// Writes a lock file exactly as the reference implementation does:
/// `<pid> <owner-uuid> <ISO-8601 time>\n`.
pub fn write_reference_lock(path: &Path, pid: u32, owner: &str, at: SystemTime) -> String {
    let content = format!("{pid} {owner} {}\n", humantime::format_rfc3339_millis(at));
    fs::write(path, &content).unwrap();
    content
}

/// Replaces the file at `path` by a new inode (as a peer that broke the lock
/// and took it would), with the reference's format and the given mtime.
pub fn replace_lock(path: &Path, owner: &str, mtime: SystemTime) -> String {
    let temp = path.with_extension("peer-tmp");
    let content = write_reference_lock(&temp, 4242, owner, mtime);
    set_mtime(&temp, mtime);
    fs::rename(&temp, path).unwrap();
    content
}

pub fn set_mtime(path: &Path, mtime: SystemTime) {
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
}

pub fn mtime(path: &Path) -> SystemTime {
    fs::metadata(path).unwrap().modified().unwrap()
}

pub fn ago(duration: Duration) -> SystemTime {
    SystemTime::now() - duration
}

/// Names of files in `dir` that look like trash of the protocol.
pub fn trash_in(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".breaking.") || name.contains(".releasing."))
        .collect()
}

pub const OTHER_OWNER: &str = "9b2f7c1e-0000-4000-8000-000000000042";
