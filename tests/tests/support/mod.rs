//! Helpers shared by the cross-crate tests.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code, unused_imports, unreachable_pub, clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

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

pub use heldlock_testkit::leftovers::{
    PROTOCOL_FILE_KINDS, left_behind, queue_dir, queue_files_left_in, queue_prefix, trash_in,
};

/// A private directory (mode 0700) for the waiter queue files of the child
/// processes of one test: see [`with_queue_dir`].
pub fn own_queue_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

/// Has the child `command` keep its waiter queue files in `dir` (from
/// [`own_queue_dir`]) instead of the real runtime or temporary directory;
/// check them with [`queue_files_left_in`].
pub fn with_queue_dir<'a>(command: &'a mut Command, dir: &Path) -> &'a mut Command {
    command.env("XDG_RUNTIME_DIR", dir).env("TMPDIR", dir)
}

pub const OTHER_OWNER: &str = "9b2f7c1e-0000-4000-8000-000000000042";

/// A visible, countable skip, shared by every test suite of the workspace
/// (not every test binary that includes this module makes one).
#[allow(unused_imports)]
pub use heldlock_testkit::skip;

/// Waits until the process `pid` waits for a lock: until it holds an
/// inotify descriptor (a waiter makes one only to listen for the lock's
/// release, once it has found the lock held), instead of sleeping for a
/// guessed while. Where `/proc` or inotify cannot tell (no `/proc`, no
/// inotify: the waiter polls), it falls back to a fixed half second, the
/// most a waiter needs to start on a busy machine, and says so.
///
/// # Panics
///
/// If `pid` does not wait within 30 s, or exits first.
pub fn wait_until_waiting(pid: u32) {
    let fds = std::path::PathBuf::from(format!("/proc/{pid}/fd"));
    let inotify = || {
        fs::read_dir(&fds)
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| {
                fs::read_link(fd.path())
                    .is_ok_and(|target| target.to_string_lossy().contains("inotify"))
            })
    };
    let proc_works = fs::read_dir("/proc/self/fd").is_ok();
    let inotify_works =
        rustix::fs::inotify::init(rustix::fs::inotify::CreateFlags::CLOEXEC).is_ok();
    if !(proc_works && inotify_works) {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "no /proc or no inotify: a fixed wait for pid {pid} to start waiting"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
        return;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !inotify() {
        assert!(fds.exists(), "pid {pid} exited before it waited");
        assert!(
            std::time::Instant::now() < deadline,
            "pid {pid} did not start waiting within 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Whether `done` holds within `limit`, looked at every 5 ms: a wait for a
/// condition with a deadline, not a guessed sleep.
pub fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
