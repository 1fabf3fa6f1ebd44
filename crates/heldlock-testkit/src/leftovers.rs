//! What a lock test may leave behind, looked for as the protocol names it:
//! files beside a lock, and waiter queue files in the queue directory.
//! Every suite that checks that a test left nothing uses these, so that a
//! new kind of file the protocol makes is counted everywhere at once.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

/// What the lock protocol names the files it makes beside a lock
/// `<name>` (`crates/heldlock-fs/src/backend`): `<name>.releasing.<id>` and
/// `<name>.breaking.<id>`, the trash of a release or a break (also the
/// fresh marker a breaker swaps in for an expired one);
/// `<name>.displaced.<id>`, a file that is not a lock, moved off the lock
/// path by mistake and kept for a person; `<name>.break.<hash>`, a break
/// marker. (`.break.` does not match `.breaking.`: the dot after it.)
pub const PROTOCOL_FILE_KINDS: [&str; 4] = [".releasing.", ".breaking.", ".displaced.", ".break."];

/// Names of the files in `dir` that the lock protocol made beside a lock:
/// trash, displaced files and break markers (see [`PROTOCOL_FILE_KINDS`]),
/// sorted. A step that completed leaves none of them; a test that expects
/// one (a marker whose removal failed, trash of a step that did not
/// complete) says which.
///
/// # Panics
///
/// When `dir` cannot be listed.
pub fn trash_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
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
/// change), only a child's.
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
///
/// # Panics
///
/// When `lock_dir` cannot be looked at.
pub fn queue_prefix(lock_dir: &Path) -> String {
    let meta = fs::metadata(lock_dir)
        .unwrap_or_else(|error| panic!("cannot stat {}: {error}", lock_dir.display()));
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
///
/// # Panics
///
/// When `queue_dir` exists but cannot be listed.
pub fn queue_files_left_in(queue_dir: &Path, lock_dir: &Path) -> Vec<String> {
    let prefix = queue_prefix(lock_dir);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<String> = match fs::read_dir(queue_dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
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
