//! Helpers shared by the integration tests.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code, clippy::unwrap_used)]

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use heldlock_core::{Inspection, LockBackend, LockRecord, Observed, OwnerId};
use heldlock_fs::record;

pub(crate) use futures::executor::block_on;

/// A record with a fixed, whole-second stamp, so equality survives any file
/// system's timestamp granularity.
pub(crate) fn record_at(secs: u64) -> LockRecord {
    LockRecord::new(
        4242,
        OwnerId::random(),
        UNIX_EPOCH + Duration::from_secs(secs),
    )
}

pub(crate) fn rec() -> LockRecord {
    record_at(1_795_777_040)
}

/// A whole-second wall-clock time, well in the past.
pub(crate) fn long_ago() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

pub(crate) fn observe<B: LockBackend>(backend: &B) -> Observed {
    match block_on(backend.inspect()).unwrap() {
        Inspection::Present(observed) => observed,
        other => panic!("expected a lock at {}: {other:?}", backend.resource()),
    }
}

/// What the lock protocol names the files it makes beside a lock
/// `<name>` (`src/backend`): `<name>.releasing.<id>` and
/// `<name>.breaking.<id>`, the trash of a release or a break (also the
/// fresh marker a breaker swaps in for an expired one);
/// `<name>.displaced.<id>`, a file that is not a lock, moved off the lock
/// path by mistake and kept for a person; `<name>.break.<hash>`, a break
/// marker. (`.break.` does not match `.breaking.`: the dot after it.)
pub(crate) const PROTOCOL_FILE_KINDS: [&str; 4] =
    [".releasing.", ".breaking.", ".displaced.", ".break."];

/// The names in `dir` of files the lock protocol made beside a lock:
/// trash, displaced files and break markers (see [`PROTOCOL_FILE_KINDS`]).
/// A step that completed leaves none of them; a test that expects one
/// says which.
pub(crate) fn trash_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| PROTOCOL_FILE_KINDS.iter().any(|kind| n.contains(kind)))
        .collect();
    names.sort();
    names
}

/// The directory this process's waiter queue files go to, found as
/// `heldlock-fs` finds it: `$XDG_RUNTIME_DIR` when it is an absolute path to
/// a real directory of this user's with no permission for group or others,
/// else `$TMPDIR/heldlock-<euid>`. Tests cannot point it elsewhere: the
/// environment of a running test process is not theirs to change.
pub(crate) fn queue_dir() -> PathBuf {
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
pub(crate) fn queue_prefix(lock_dir: &Path) -> String {
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

/// The waiter queue files left in [`queue_dir`] for locks in `lock_dir`
/// (see [`queue_prefix`]). A queue thread may drop its process's place just
/// after its waiter's listener went: files are looked for again for up to a
/// few seconds before they count as left.
pub(crate) fn queue_files_left(lock_dir: &Path) -> Vec<String> {
    let prefix = queue_prefix(lock_dir);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<String> = match fs::read_dir(queue_dir()) {
            Ok(entries) => entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with(&prefix))
                .collect(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => panic!("cannot list {}: {error}", queue_dir().display()),
        };
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Everything a finished test left behind for the locks in `dir`: protocol
/// trash beside them and waiter queue files in [`queue_dir`].
pub(crate) fn left_behind(dir: &Path) -> Vec<String> {
    let mut left = trash_in(dir);
    left.extend(queue_files_left(dir));
    left
}

pub(crate) fn set_mtime(path: &Path, when: SystemTime) {
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(when)
        .unwrap();
}

pub(crate) fn mtime(path: &Path) -> SystemTime {
    fs::symlink_metadata(path).unwrap().modified().unwrap()
}

pub(crate) fn inode(path: &Path) -> (u64, u64) {
    let meta = fs::symlink_metadata(path).unwrap();
    (meta.dev(), meta.ino())
}

pub(crate) fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// What a peer does when it breaks our lock and takes it: a new inode at
/// the path, holding `content`, stamped `when`.
pub(crate) fn replace(path: &Path, content: &[u8], when: SystemTime) {
    let tmp = path.with_extension("peer-tmp");
    let mut file = fs::File::create_new(&tmp).unwrap();
    file.write_all(content).unwrap();
    file.set_modified(when).unwrap();
    drop(file);
    fs::rename(&tmp, path).unwrap();
}

/// Rewrites the file in place (same inode).
pub(crate) fn rewrite_in_place(path: &Path, content: &[u8]) {
    let mut file = fs::File::options()
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    file.write_all(content).unwrap();
}

pub(crate) fn other_owner_record() -> Vec<u8> {
    record::encode(&rec()).into_bytes()
}

pub(crate) fn lock_path(dir: &Path) -> PathBuf {
    dir.join("db.lock")
}

/// Visible, countable skips, shared by every test suite of the workspace
/// (not every test binary that includes this module makes one).
#[allow(unused_imports)]
pub(crate) use heldlock_testkit::{skip, skip_unless_required};

/// Whether this process can make an inotify descriptor: asked of the kernel
/// directly, not of the code under test, so that a listener that is never
/// made where it could be fails its test instead of skipping it.
pub(crate) fn inotify_available() -> bool {
    rustix::fs::inotify::init(rustix::fs::inotify::CreateFlags::CLOEXEC).is_ok()
}
