//! Helpers shared by the cross-crate tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

/// What the lock protocol names the files it makes beside a lock
/// `<name>` (`crates/heldlock-fs/src/backend`): `<name>.releasing.<id>` and
/// `<name>.breaking.<id>`, the trash of a release or a break (also the
/// fresh marker a breaker swaps in for an expired one);
/// `<name>.displaced.<id>`, a file that is not a lock, moved off the lock
/// path by mistake and kept for a person; `<name>.break.<hash>`, a break
/// marker. (`.break.` does not match `.breaking.`: the dot after it.)
pub const PROTOCOL_FILE_KINDS: [&str; 4] = [".releasing.", ".breaking.", ".displaced.", ".break."];

/// Names of the files in `dir` that the lock protocol made beside a lock:
/// trash, displaced files and break markers (see [`PROTOCOL_FILE_KINDS`]).
/// A step that completed leaves none of them; a test that expects one
/// (a marker whose removal failed, trash of a step that did not complete)
/// says which.
pub fn trash_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| PROTOCOL_FILE_KINDS.iter().any(|kind| name.contains(kind)))
        .collect();
    names.sort();
    names
}

/// The directory this process's waiter queue files go to, found as
/// `heldlock-fs` finds it: `$XDG_RUNTIME_DIR` when it is an absolute path to
/// a real directory of this user's with no permission for group or others,
/// else `$TMPDIR/heldlock-<euid>`. A test cannot point its own process's
/// elsewhere (the environment of a running test process is not its to
/// change), only a child's: see [`own_queue_dir`].
pub fn queue_dir() -> PathBuf {
    let euid = rustix::process::geteuid().as_raw();
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from)
        && runtime.is_absolute()
        && fs::symlink_metadata(&runtime)
            .is_ok_and(|meta| meta.is_dir() && meta.uid() == euid && meta.mode() & 0o077 == 0)
    {
        return runtime;
    }
    std::env::temp_dir().join(format!("heldlock-{euid}"))
}

/// The start of the names of the waiter queues of the locks in `lock_dir`,
/// as heldlock-fs names them: after the directory's device, inode number
/// and birth time where the file system reports one (an inode number alone
/// goes to the next directory made once this one is removed, and so would
/// match that directory's queues too).
pub fn queue_prefix(lock_dir: &Path) -> String {
    let meta = fs::metadata(lock_dir).unwrap();
    let (dev, ino) = (meta.dev(), meta.ino());
    match meta
        .created()
        .ok()
        .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
    {
        Some(born) => format!(
            "heldlock-{dev:x}-{ino:x}-{:x}{:08x}-",
            born.as_secs(),
            born.subsec_nanos()
        ),
        None => format!("heldlock-{dev:x}-{ino:x}-"),
    }
}

/// The waiter queue files left in `queue_dir` for locks in `lock_dir`
/// (see [`queue_prefix`]). A queue thread may drop its process's place just
/// after its waiter's listener went: files are looked for again for up to a
/// few seconds before they count as left.
pub fn queue_files_left_in(queue_dir: &Path, lock_dir: &Path) -> Vec<String> {
    let prefix = queue_prefix(lock_dir);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<String> = match fs::read_dir(queue_dir) {
            Ok(entries) => entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with(&prefix))
                .collect(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => panic!("cannot list {}: {error}", queue_dir.display()),
        };
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Everything a finished test left behind for the locks in `dir`: protocol
/// trash beside them and this process's waiter queue files.
pub fn left_behind(dir: &Path) -> Vec<String> {
    let mut left = trash_in(dir);
    left.extend(queue_files_left_in(&queue_dir(), dir));
    left
}

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
