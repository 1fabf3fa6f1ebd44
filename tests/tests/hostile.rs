//! Hostile lock paths and contents, through the public lock API.
//!
//! The backend-level cases already in `crates/heldlock-fs/tests` (a foreign
//! summary, the refusal's excerpt, the 4 KiB identity cap, a directory's
//! `NotALock`, a symlink or FIFO refused by `inspect` and removed only by the
//! forced break, a dangling link never created through) are not repeated;
//! here each hostile thing meets the whole lock (`FileLock` on tokio,
//! async-std and smol, and the blocking API). What a crashed holder leaves
//! (an empty file, the start of a record) is honoured while fresh and broken
//! only once stale. Anything else (a file that is not a lock, a directory, a
//! symbolic link, a FIFO, socket or device) is refused at once, however old,
//! with a typed error, and left exactly as it was; a file heldlock may not
//! read is honoured and never broken. Nothing ever blocks, and nothing but
//! the lock path is ever touched. "Never touched" is checked with inotify on
//! the victim (no open, read, write, attribute change, move or delete) and a
//! snapshot of its inode, link count, size, mtime, ctime and content.
#![allow(clippy::unwrap_used)]

mod support;
mod vfs_faults;

use std::collections::HashMap;
use std::fs;
use std::mem::MaybeUninit;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use heldlock_core::{
    BackendError, Broke, Error, Holder, Inspection, LockBackend, LockOptions, Released, Runtime,
    Step,
};
use heldlock_fs::FsBackend;
use rustix::fd::OwnedFd;
use rustix::fs::inotify::{self, ReadFlags, WatchFlags};
use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps};
use rustix::io::Errno;
use support::*;
use vfs_faults::{FaultVfs, Op, Warnings, lock_on};

const WORKER: &str = env!("CARGO_BIN_EXE_heldlock-test-worker");
/// What a FIFO, socket or device is called in a refusal.
const NODE: &str = "a FIFO, socket or device";

// ---------------------------------------------------------------- the APIs

/// What one attempt to take the lock came to.
#[derive(Debug)]
enum Outcome {
    /// Acquired (the lock file then named us) and released.
    Acquired,
    Timeout(Option<Holder>),
    Failed(Error),
}

/// One public lock API: a strict attempt, and a best-effort `with_lock`
/// that returns whether its task ran under the lock.
struct Api {
    attempt: fn(&Path, LockOptions) -> Outcome,
    best_effort: fn(&Path, LockOptions) -> bool,
}

fn check_ours(path: &Path, owner: &str) {
    let meta = fs::symlink_metadata(path).unwrap();
    assert!(meta.is_file(), "our lock is a regular file");
    assert!(fs::read_to_string(path).unwrap().contains(owner));
}

async fn attempt_async<R: Runtime + Default>(path: PathBuf, options: LockOptions) -> Outcome {
    let lock = match heldlock_fs::FileLock::<R>::new(&path, options) {
        Ok(lock) => lock,
        Err(error) => return Outcome::Failed(error),
    };
    match lock.acquire().await {
        Ok(held) => {
            check_ours(&path, held.owner().as_str());
            assert_eq!(held.release().await.unwrap(), Released::Released);
            Outcome::Acquired
        }
        Err(Error::Timeout { holder, .. }) => Outcome::Timeout(holder),
        Err(error) => Outcome::Failed(error),
    }
}

async fn best_effort_async<R: Runtime + Default>(path: PathBuf, options: LockOptions) -> bool {
    let lock = heldlock_fs::FileLock::<R>::new(&path, options).unwrap();
    lock.with_lock(|state| async move { state.acquired() })
        .await
}

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

static TOKIO: Api = Api {
    attempt: |p, o| tokio_rt().block_on(attempt_async::<heldlock_tokio::TokioRuntime>(p.into(), o)),
    best_effort: |p, o| {
        tokio_rt().block_on(best_effort_async::<heldlock_tokio::TokioRuntime>(
            p.into(),
            o,
        ))
    },
};

static ASYNC_STD: Api = Api {
    attempt: |p, o| {
        async_std::task::block_on(attempt_async::<heldlock_async_std::AsyncStdRuntime>(
            p.into(),
            o,
        ))
    },
    best_effort: |p, o| {
        async_std::task::block_on(best_effort_async::<heldlock_async_std::AsyncStdRuntime>(
            p.into(),
            o,
        ))
    },
};

static SMOL: Api = Api {
    attempt: |p, o| smol::block_on(attempt_async::<heldlock_smol::SmolRuntime>(p.into(), o)),
    best_effort: |p, o| {
        smol::block_on(best_effort_async::<heldlock_smol::SmolRuntime>(p.into(), o))
    },
};

static BLOCKING: Api = Api {
    attempt: |path, options| {
        let lock = match heldlock::blocking::FileLock::new(path, options) {
            Ok(lock) => lock,
            Err(error) => return Outcome::Failed(error),
        };
        match lock.acquire() {
            Ok(held) => {
                check_ours(path, held.owner().as_str());
                assert_eq!(held.release().unwrap(), Released::Released);
                Outcome::Acquired
            }
            Err(Error::Timeout { holder, .. }) => Outcome::Timeout(holder),
            Err(error) => Outcome::Failed(error),
        }
    },
    best_effort: |path, options| {
        heldlock::blocking::FileLock::new(path, options)
            .unwrap()
            .with_lock(|state| state.acquired())
    },
};

/// Runs each scenario on every API: `mod <scenario> { tokio, async_std, smol, blocking }`.
macro_rules! on_each_api {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn tokio() {
                super::$name(&super::TOKIO);
            }
            #[test]
            fn async_std() {
                super::$name(&super::ASYNC_STD);
            }
            #[test]
            fn smol() {
                super::$name(&super::SMOL);
            }
            #[test]
            fn blocking() {
                super::$name(&super::BLOCKING);
            }
        }
    )*};
}

// ---------------------------------------------------------------- observing

/// Options that give up on a busy lock after 100 ms.
fn busy() -> LockOptions {
    LockOptions::new(Duration::from_secs(5)).max_wait(Duration::from_millis(100))
}

/// Options that wait long enough to break anything stale.
fn patient() -> LockOptions {
    LockOptions::new(Duration::from_secs(5)).max_wait(Duration::from_secs(20))
}

/// Sets the mtime of `path` itself, whatever it is (a link, a FIFO, a
/// device), without opening it.
fn stamp(path: &Path, when: SystemTime) {
    let (secs, nanos) = match when.duration_since(UNIX_EPOCH) {
        Ok(d) => (i64::try_from(d.as_secs()).unwrap(), d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            assert_eq!(d.subsec_nanos(), 0, "whole seconds before 1970 only");
            (-i64::try_from(d.as_secs()).unwrap(), 0)
        }
    };
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: secs,
            tv_nsec: nanos.into(),
        },
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

fn minute_ago() -> SystemTime {
    ago(Duration::from_secs(60))
}

/// Everything observable about one name, without opening anything but a
/// regular file (for its content).
#[derive(Debug, PartialEq, Eq)]
struct Snap {
    dev: u64,
    ino: u64,
    mode: u32,
    nlink: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    content: Option<Vec<u8>>,
    target: Option<PathBuf>,
}

fn snap(path: &Path) -> Snap {
    let m = fs::symlink_metadata(path).unwrap();
    Snap {
        dev: m.dev(),
        ino: m.ino(),
        mode: m.mode(),
        nlink: m.nlink(),
        len: m.len(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
        content: m.is_file().then(|| fs::read(path).unwrap()),
        target: m.is_symlink().then(|| fs::read_link(path).unwrap()),
    }
}

/// inotify watches on a few names; take snapshots (which read) before
/// creating it, and read its events before snapshotting again.
struct Watcher {
    fd: OwnedFd,
    names: HashMap<i32, PathBuf>,
}

impl Watcher {
    fn new(paths: &[&Path]) -> Self {
        let fd =
            inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK).unwrap();
        let names = paths
            .iter()
            .map(|p| {
                let flags = WatchFlags::ALL_EVENTS | WatchFlags::DONT_FOLLOW;
                (inotify::add_watch(&fd, *p, flags).unwrap(), p.to_path_buf())
            })
            .collect();
        Watcher { fd, names }
    }

    /// Every event so far, as (watched name, what, name inside a directory).
    fn events(&self) -> Vec<(PathBuf, ReadFlags, Option<String>)> {
        let mut buf = [MaybeUninit::uninit(); 8192];
        let mut reader = inotify::Reader::new(&self.fd, &mut buf);
        let mut out = Vec::new();
        loop {
            match reader.next() {
                Ok(event) => {
                    let watched = self.names.get(&event.wd()).cloned().unwrap_or_default();
                    let name = event.file_name().map(|n| n.to_string_lossy().into_owned());
                    out.push((watched, event.events(), name));
                }
                Err(Errno::AGAIN) => return out,
                Err(e) => panic!("reading inotify events: {e}"),
            }
        }
    }
}

/// What opening, reading or writing a node would show.
fn io_events() -> ReadFlags {
    ReadFlags::OPEN
        | ReadFlags::ACCESS
        | ReadFlags::MODIFY
        | ReadFlags::CLOSE_WRITE
        | ReadFlags::CLOSE_NOWRITE
}

fn assert_no_io(events: &[(PathBuf, ReadFlags, Option<String>)], what: &str) {
    for (path, flags, name) in events {
        assert!(
            !flags.intersects(io_events()),
            "{what} was opened, read or written: {flags:?} on {} {name:?}",
            path.display()
        );
    }
}

/// What changing a node, or the names in a directory, would show.
fn change_events() -> ReadFlags {
    ReadFlags::MODIFY
        | ReadFlags::ATTRIB
        | ReadFlags::CLOSE_WRITE
        | ReadFlags::CREATE
        | ReadFlags::DELETE
        | ReadFlags::MOVED_FROM
        | ReadFlags::MOVED_TO
        | ReadFlags::DELETE_SELF
        | ReadFlags::MOVE_SELF
}

fn assert_no_change(events: &[(PathBuf, ReadFlags, Option<String>)], what: &str) {
    for (path, flags, name) in events {
        assert!(
            !flags.intersects(change_events()),
            "{what} was changed, moved or removed: {flags:?} on {} {name:?}",
            path.display()
        );
    }
}

fn foreign_summary(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Timeout(Some(Holder::Foreign { summary })) => summary.clone(),
        other => panic!("expected a timeout on a foreign lock, got {other:?}"),
    }
}

/// The refusal of a regular file that is not a lock, checked to name
/// `path`: its size and excerpt.
fn refused_file(outcome: Outcome, path: &Path) -> (u64, String) {
    match outcome {
        Outcome::Failed(Error::Backend(BackendError::NotALockFile {
            step,
            resource,
            size,
            excerpt,
        })) => {
            assert_eq!(step, Step::Inspect);
            assert_eq!(resource, path.display().to_string());
            (size, excerpt)
        }
        other => panic!("expected NotALockFile, got {other:?}"),
    }
}

/// The refusal of something that is not a regular file, checked to name
/// `path`: what it says stands there.
fn refused_kind(outcome: Outcome, path: &Path) -> String {
    match outcome {
        Outcome::Failed(Error::Backend(BackendError::NotALock {
            step,
            resource,
            what,
        })) => {
            assert_eq!(step, Step::Inspect);
            assert_eq!(resource, path.display().to_string());
            what
        }
        other => panic!("expected NotALock, got {other:?}"),
    }
}

/// The names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn hour_ago() -> SystemTime {
    ago(Duration::from_secs(3600))
}

/// Tries `api` on the file at `path`, which is not a lock, stamped an hour
/// ago: it must be refused at once (well before `max_wait`) with its size
/// and a short, printable excerpt, also by the best-effort API, and be left
/// exactly as it was, with nothing made beside it. The excerpt.
fn assert_refused_and_intact(api: &Api, path: &Path, stale: Duration) -> String {
    let dir = path.parent().unwrap();
    stamp(path, hour_ago());
    let size = fs::symlink_metadata(path).unwrap().len();
    let names = names_in(dir);
    let before = snap(path);
    let watcher = Watcher::new(&[path, dir]);

    let options = || LockOptions::new(stale).max_wait(Duration::from_secs(20));
    let started = Instant::now();
    let (got, excerpt) = refused_file((api.attempt)(path, options()), path);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused only after {:?}",
        started.elapsed()
    );
    assert_eq!(got, size);
    assert!(excerpt.chars().count() <= 80, "{excerpt:?}");
    assert!(
        !excerpt.chars().any(char::is_control),
        "the excerpt must be printable: {excerpt:?}"
    );
    let warnings = Warnings::default();
    assert!(!(api.best_effort)(path, warnings.hook(options())));
    assert!(warnings.any("not a lock file"), "{:?}", warnings.all());

    assert_no_change(&watcher.events(), "the file at the lock path");
    assert_eq!(snap(path), before, "the file is left exactly as it was");
    assert_eq!(names_in(dir), names, "nothing was made beside it");
    excerpt
}

/// A victim file in a directory of its own, holding what a lock file would
/// (a fresh record of another owner), so that following a link to it would
/// show as a fresh, recognised lock.
fn victim(dir: &Path) -> PathBuf {
    let victims = dir.join("victims");
    fs::create_dir(&victims).unwrap();
    let victim = victims.join("precious");
    write_reference_lock(&victim, 31337, OTHER_OWNER, SystemTime::now());
    victim
}

// ---------------------------------------------------------------- contents

on_each_api!(
    what_a_crashed_holder_leaves_is_honoured_while_fresh_and_broken_once_stale,
    files_that_are_not_locks_are_refused_at_once_and_left_untouched,
    a_data_file_or_script_at_the_lock_path_is_refused_at_once_and_left_intact,
    a_10_mib_file_is_refused_at_once_after_a_bounded_read,
    a_far_future_record_time_is_only_informational,
    a_far_future_stamp_goes_stale_by_the_unchanged_rule_only,
    a_far_past_stamp_is_broken_at_once,
);

/// An empty file or the start of a record: a holder that crashed between
/// its create and its write, or in the middle of its write.
fn what_a_crashed_holder_leaves_is_honoured_while_fresh_and_broken_once_stale(api: &Api) {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        (
            "a partial line",
            b"4242 0f8fad5b-d9cb-469f-a165-70867728950e 2026-11-2".to_vec(),
        ),
        ("a pid and the start of an owner", b"4242 0f8fad5b".to_vec()),
        ("a write cut inside a character", {
            let full = "4242 0f8fad5b-d9cb-469f-a165-70867728950e 2026-11-27T10:57:20.000Z note=\u{e9}".as_bytes();
            full[..full.len() - 1].to_vec()
        }),
        (
            "terminal escapes in a field cut short",
            "4242 0f8fad5b-d9cb-469f-a165-70867728950e 2026-11-27T10:57:20.000Z \x1b]0;pwned\x07\x1b[2J\u{202e}kcol"
                .as_bytes()
                .to_vec(),
        ),
    ];
    for (what, content) in cases {
        let (dir, path) = lock_path();
        fs::write(&path, &content).unwrap();
        let before = snap(&path);

        let outcome = (api.attempt)(&path, busy());
        let summary = foreign_summary(&outcome);
        // `heldlock_fs::summary` promises at most 80 characters.
        assert!(summary.chars().count() <= 80, "{what}: {summary:?}");
        assert!(
            !summary.chars().any(char::is_control),
            "{what}: the summary must be printable: {summary:?}"
        );
        let warnings = Warnings::default();
        assert!(!(api.best_effort)(&path, warnings.hook(busy())), "{what}");
        assert!(warnings.any("running the task without the lock"), "{what}");
        assert_eq!(
            snap(&path),
            before,
            "{what}: a fresh foreign lock is untouched"
        );

        stamp(&path, minute_ago());
        assert!(
            matches!((api.attempt)(&path, patient()), Outcome::Acquired),
            "{what}"
        );
        assert!(!path.exists(), "{what}");
        assert!(trash_in(dir.path()).is_empty(), "{what}");
    }
}

/// Anything else is somebody's file: refused at once, however old.
fn files_that_are_not_locks_are_refused_at_once_and_left_untouched(api: &Api) {
    let mut random = Vec::new();
    let mut x: u64 = 0x5eed_1234_abcd_ef01;
    for _ in 0..300 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        random.push(x.to_le_bytes()[0]);
    }
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "a record without its time",
            b"4242 0f8fad5b-d9cb-469f-a165-70867728950e\n".to_vec(),
        ),
        (
            "a record and more lines",
            b"4242 0f8fad5b-d9cb-469f-a165-70867728950e 2026-11-27T10:57:20.000Z\nmore\n".to_vec(),
        ),
        ("a number and a line end", b"12345\n".to_vec()),
        ("a note", b"stale foreign lock".to_vec()),
        ("a note and a line end", b"locked by cron\n".to_vec()),
        ("random bytes", random),
        ("not UTF-8", b"\xff\xfe\xfd lock \xc3\x28 \x80\n".to_vec()),
        ("NUL bytes", vec![0; 64]),
        (
            "terminal escapes",
            "\x1b]0;pwned\x07\x1b[2J\r\u{202e}kcol\n"
                .as_bytes()
                .to_vec(),
        ),
        ("one 5 KiB line", vec![b'7'; 5 * 1024]),
    ];
    for (what, content) in cases {
        let (_dir, path) = lock_path();
        fs::write(&path, &content).unwrap();
        let excerpt = assert_refused_and_intact(api, &path, Duration::from_secs(5));
        assert!(!excerpt.is_empty(), "{what}");
        assert_eq!(fs::read(&path).unwrap(), content, "{what}");
    }
}

/// The issue's repro: `printf 'data\n' > data.txt; touch -d '-1 hour'
/// data.txt`, then a lock on `data.txt` with `stale` 1 s, which used to
/// break (delete) it. The same for a script, and for a 10 MiB file, which
/// costs a bounded read.
fn a_data_file_or_script_at_the_lock_path_is_refused_at_once_and_left_intact(api: &Api) {
    let cases = [
        (
            "data.txt",
            r"printf 'data\n' > data.txt; touch -d '-1 hour' data.txt",
            r"data\n",
        ),
        (
            "run.sh",
            r#"printf '#!/bin/sh\nflock -en "$0" true\n' > run.sh; chmod +x run.sh; touch -d '-1 hour' run.sh"#,
            r#"#!/bin/sh\nflock -en "$0" true\n"#,
        ),
        (
            "big.txt",
            r"yes data | head -c 10485760 > big.txt; touch -d '-1 hour' big.txt",
            "",
        ),
    ];
    for (name, script, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("sh")
            .args(["-c", script])
            .current_dir(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "{script}");
        let path = dir.path().join(name);
        let content = fs::read(&path).unwrap();
        assert!(mtime(&path) < ago(Duration::from_secs(3000)), "{name}");

        let excerpt = assert_refused_and_intact(api, &path, Duration::from_secs(1));
        if name == "big.txt" {
            assert_eq!(content.len(), 10 << 20);
            assert!(excerpt.starts_with(r"data\ndata\n"), "{excerpt}");
            assert!(excerpt.ends_with('…'), "{excerpt}");
        } else {
            assert_eq!(excerpt, expected);
        }
        assert_eq!(fs::read(&path).unwrap(), content, "{name} is intact");
        assert_eq!(names_in(dir.path()), [name]);
    }
}

fn a_10_mib_file_is_refused_at_once_after_a_bounded_read(api: &Api) {
    let (dir, path) = lock_path();
    // Whatever its first line says, a file this large is no lock record.
    let mut content = format!("4242 {OTHER_OWNER} 2026-11-27T10:57:20.000Z\n").into_bytes();
    content.resize(10 << 20, b'x');
    fs::write(&path, &content).unwrap();
    // Real time: refused at once; reading 10 MiB would show.
    let excerpt = assert_refused_and_intact(api, &path, Duration::from_secs(5));
    assert!(excerpt.starts_with("4242 "), "{excerpt}");
    assert!(excerpt.ends_with('…'), "{excerpt}");
    assert_eq!(fs::metadata(&path).unwrap().len(), 10 << 20);
    assert!(trash_in(dir.path()).is_empty());
}

fn a_far_future_record_time_is_only_informational(api: &Api) {
    let (_dir, path) = lock_path();
    fs::write(
        &path,
        format!("4242 {OTHER_OWNER} 9999-12-31T23:59:59.999Z\n"),
    )
    .unwrap();
    // Fresh by its mtime: honoured, and read as a record.
    match (api.attempt)(&path, busy()) {
        Outcome::Timeout(Some(Holder::Record(record))) => {
            assert_eq!(record.owner.as_str(), OTHER_OWNER);
            assert!(record.acquired_at > SystemTime::now() + Duration::from_secs(200_000_000_000));
        }
        other => panic!("expected a timeout on the record, got {other:?}"),
    }
    // Old by its mtime: broken, whatever the record claims.
    stamp(&path, minute_ago());
    assert!(matches!((api.attempt)(&path, busy()), Outcome::Acquired));
}

fn a_far_future_stamp_goes_stale_by_the_unchanged_rule_only(api: &Api) {
    let (dir, path) = lock_path();
    write_reference_lock(&path, 4242, OTHER_OWNER, SystemTime::now());
    let future = SystemTime::now() + Duration::from_secs(200 * 365 * 24 * 3600);
    stamp(&path, future);
    assert_eq!(mtime(&path), future, "this file system keeps the stamp");
    let stale = Duration::from_millis(400);
    // Never stale by the wall clock (its age is negative), and the unchanged
    // rule needs a full `stale` of watching: a shorter wait gives up.
    let quick = LockOptions::new(stale).max_wait(Duration::from_millis(150));
    assert!(matches!(
        (api.attempt)(&path, quick),
        Outcome::Timeout(Some(Holder::Record(_)))
    ));
    assert_eq!(mtime(&path), future);
    let started = Instant::now();
    let long = LockOptions::new(stale).max_wait(Duration::from_secs(20));
    assert!(matches!((api.attempt)(&path, long), Outcome::Acquired));
    assert!(
        started.elapsed() >= stale,
        "broken after {:?}, before `stale` of watching",
        started.elapsed()
    );
    assert!(trash_in(dir.path()).is_empty());
}

fn a_far_past_stamp_is_broken_at_once(api: &Api) {
    for when in [
        UNIX_EPOCH + Duration::from_secs(1),
        UNIX_EPOCH - Duration::from_secs(86_400),
    ] {
        let (_dir, path) = lock_path();
        write_reference_lock(&path, 4242, OTHER_OWNER, UNIX_EPOCH);
        stamp(&path, when);
        assert_eq!(mtime(&path), when);
        let started = Instant::now();
        // `busy()` gives up after 100 ms: only an at-once break acquires.
        assert!(
            matches!((api.attempt)(&path, busy()), Outcome::Acquired),
            "{when:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

// ---------------------------------------------------------------- kinds of file

on_each_api!(
    a_directory_at_the_lock_path_is_refused_and_left_alone,
    a_fifo_at_the_lock_path_is_never_opened,
    a_socket_at_the_lock_path_is_never_connected,
    a_device_node_at_the_lock_path_is_never_opened,
);

fn a_directory_at_the_lock_path_is_refused_and_left_alone(api: &Api) {
    let (_dir, path) = lock_path();
    fs::create_dir(&path).unwrap();
    fs::write(path.join("inside"), b"data").unwrap();
    stamp(&path, minute_ago()); // old: still never broken
    let before = (snap(&path), snap(&path.join("inside")));
    match (api.attempt)(&path, patient()) {
        Outcome::Failed(Error::Backend(BackendError::NotALock { resource, .. })) => {
            assert!(resource.contains("state.lock"), "{resource}");
        }
        other => panic!("expected NotALock, got {other:?}"),
    }
    let warnings = Warnings::default();
    assert!(!(api.best_effort)(&path, warnings.hook(patient())));
    assert!(warnings.any("a directory"), "{:?}", warnings.all());
    assert_eq!((snap(&path), snap(&path.join("inside"))), before);
}

/// Opens the FIFO for writing if a reader still blocks in `open` after
/// 20 s, so that a regression fails the test instead of hanging it.
struct Unblocker {
    done: Arc<AtomicBool>,
    rescued: Arc<AtomicBool>,
}

impl Unblocker {
    fn new(fifo: &Path) -> Self {
        let (done, rescued) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let (d, r, fifo) = (Arc::clone(&done), Arc::clone(&rescued), fifo.to_path_buf());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !d.load(Ordering::SeqCst) {
                if Instant::now() > deadline {
                    let flags = rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::NONBLOCK;
                    if rustix::fs::open(&fifo, flags, Mode::empty()).is_ok() {
                        r.store(true, Ordering::SeqCst);
                    }
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Unblocker { done, rescued }
    }

    fn finish(self) -> bool {
        self.done.store(true, Ordering::SeqCst);
        self.rescued.load(Ordering::SeqCst)
    }
}

/// A special file at the lock path: refused at once however old, never
/// opened, never moved or removed.
fn special_file(api: &Api, path: &Path) {
    let dir = path.parent().unwrap();
    stamp(path, hour_ago());
    let names = names_in(dir);
    let watcher = Watcher::new(&[path]);
    let unblocker = Unblocker::new(path);
    let before = snap(path);
    let started = Instant::now();
    assert_eq!(refused_kind((api.attempt)(path, patient()), path), NODE);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused only after {:?}",
        started.elapsed()
    );
    let warnings = Warnings::default();
    assert!(!(api.best_effort)(path, warnings.hook(patient())));
    assert!(warnings.any(NODE), "{:?}", warnings.all());
    assert!(!unblocker.finish(), "an open blocked on the node");
    let events = watcher.events();
    assert_no_io(&events, "the node at the lock path");
    assert_eq!(events, vec![], "the node is not even touched");
    assert_eq!(snap(path), before);
    assert_eq!(names_in(dir), names, "nothing moved or made beside it");
    assert!(trash_in(dir).is_empty());
}

fn a_fifo_at_the_lock_path_is_never_opened(api: &Api) {
    let (_dir, path) = lock_path();
    rustix::fs::mkfifoat(CWD, &path, Mode::from_raw_mode(0o644)).unwrap();
    special_file(api, &path);
}

fn a_socket_at_the_lock_path_is_never_connected(api: &Api) {
    let (_dir, path) = lock_path();
    let listener = UnixListener::bind(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    special_file(api, &path);
    let accepted = listener.accept().map(|_| ());
    assert_eq!(
        accepted.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::WouldBlock),
        "nobody connected to the socket"
    );
}

fn a_device_node_at_the_lock_path_is_never_opened(api: &Api) {
    let (_dir, path) = lock_path();
    // A node like /dev/null (char 1:3): harmless if the test itself fails.
    let dev = rustix::fs::makedev(1, 3);
    if let Err(error) = rustix::fs::mknodat(
        CWD,
        &path,
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        dev,
    ) {
        // The harness names the thread after the test (`<case>::<api>`).
        let test = std::thread::current()
            .name()
            .unwrap_or("a_device_node_at_the_lock_path_is_never_opened")
            .to_owned();
        support::skip(
            &test,
            &format!("cannot make a device node here ({error}); needs CAP_MKNOD"),
        );
        return;
    }
    special_file(api, &path);
}

// ---------------------------------------------------------------- symbolic links

on_each_api!(
    a_symlink_at_the_lock_path_is_refused_and_never_touches_its_target,
    a_stale_dangling_symlink_is_refused_and_its_target_never_made,
    symlinks_planted_at_trash_like_names_are_never_followed_or_removed,
);

fn a_symlink_at_the_lock_path_is_refused_and_never_touches_its_target(api: &Api) {
    let (dir, path) = lock_path();
    let victim = victim(dir.path());
    std::os::unix::fs::symlink(&victim, &path).unwrap();
    // Old by its own mtime (not the target's, which is fresh): still never
    // broken.
    stamp(&path, hour_ago());
    let before = (snap(&victim), snap(&path));
    let watcher = Watcher::new(&[&victim, victim.parent().unwrap(), &path]);

    // Followed, the link would show the victim's fresh record; it must be
    // refused as a link, at once.
    let started = Instant::now();
    assert_eq!(
        refused_kind((api.attempt)(&path, patient()), &path),
        "a symbolic link"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let warnings = Warnings::default();
    assert!(!(api.best_effort)(&path, warnings.hook(patient())));
    assert!(warnings.any("a symbolic link"), "{:?}", warnings.all());
    assert!(trash_in(dir.path()).is_empty());

    assert_eq!(
        watcher.events(),
        vec![],
        "the victim or the link was touched"
    );
    assert_eq!((snap(&victim), snap(&path)), before);
}

fn a_stale_dangling_symlink_is_refused_and_its_target_never_made(api: &Api) {
    let (dir, path) = lock_path();
    let victims = dir.path().join("victims");
    fs::create_dir(&victims).unwrap();
    let target = victims.join("created-through-the-link");
    std::os::unix::fs::symlink(&target, &path).unwrap();
    stamp(&path, hour_ago());
    let before = snap(&path);
    let watcher = Watcher::new(&[&victims, &path]);
    assert_eq!(
        refused_kind((api.attempt)(&path, patient()), &path),
        "a symbolic link"
    );
    assert_eq!(snap(&path), before, "the link is left as it was");
    assert!(fs::symlink_metadata(&target).is_err());
    assert_eq!(
        watcher.events(),
        vec![],
        "the link, or something in the target's directory, was touched"
    );
    assert_eq!(names_in(dir.path()), ["state.lock", "victims"]);
}

fn symlinks_planted_at_trash_like_names_are_never_followed_or_removed(api: &Api) {
    let (dir, path) = lock_path();
    let victim = victim(dir.path());
    let planted: Vec<PathBuf> = [
        "state.lock.breaking.00000000000000000000000000000000",
        "state.lock.releasing.00000000000000000000000000000000",
        "state.lock.breaking.",
        "state.lock.releasing.x",
    ]
    .iter()
    .map(|name| dir.path().join(name))
    .collect();
    for link in &planted {
        std::os::unix::fs::symlink(&victim, link).unwrap();
    }
    let links_before: Vec<Snap> = planted.iter().map(|l| snap(l)).collect();
    let before = snap(&victim);
    let watcher = Watcher::new(&[&victim, victim.parent().unwrap()]);

    // A stale lock broken, then ours taken and released, twice.
    write_reference_lock(&path, 4242, OTHER_OWNER, minute_ago());
    stamp(&path, minute_ago());
    assert!(matches!((api.attempt)(&path, patient()), Outcome::Acquired));
    assert!(matches!((api.attempt)(&path, patient()), Outcome::Acquired));

    let mut trash = trash_in(dir.path());
    trash.sort();
    let mut names: Vec<String> = planted
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        trash, names,
        "exactly the planted names, and no trash of ours"
    );
    let links_after: Vec<Snap> = planted.iter().map(|l| snap(l)).collect();
    assert_eq!(links_after, links_before, "the planted links are untouched");
    assert_eq!(watcher.events(), vec![], "the victim was touched");
    assert_eq!(snap(&victim), before);
}

/// Even a symlink planted at the very trash name the protocol picks (were
/// it guessed) is replaced by the `rename`, never followed; and a trash file
/// swapped for a symlink before the `unlink` loses only the link.
#[test]
fn symlinks_swapped_in_at_the_trash_names_mid_step_are_never_followed() {
    let (dir, path) = lock_path();
    let victim = victim(dir.path());
    let before = snap(&victim);
    let watcher = Watcher::new(&[&victim, victim.parent().unwrap()]);
    let vfs = FaultVfs::new();
    let plant = {
        let victim = victim.clone();
        move |trash: &Path| {
            assert!(
                trash.to_string_lossy().contains("ing."),
                "{}",
                trash.display()
            );
            std::os::unix::fs::symlink(&victim, trash).unwrap();
        }
    };
    let swap = {
        let victim = victim.clone();
        move |trash: &Path| {
            let temp = trash.with_extension("swap");
            std::os::unix::fs::symlink(&victim, &temp).unwrap();
            fs::rename(&temp, trash).unwrap();
        }
    };
    // Break (rename 1, unlink 1 of the trash, unlink 2 of the break
    // marker), then release (rename 2, unlink 3).
    vfs.before(Op::Rename, 1, plant.clone());
    vfs.before(Op::Unlink, 1, swap.clone());
    vfs.before(Op::Rename, 2, plant);
    vfs.before(Op::Unlink, 3, swap);

    write_reference_lock(&path, 4242, OTHER_OWNER, minute_ago());
    stamp(&path, minute_ago());
    let lock = lock_on(
        &path,
        &vfs,
        heldlock::blocking::ThreadRuntime,
        patient(),
        false,
    );
    let held = heldlock::blocking::block_on(lock.acquire()).unwrap();
    assert_eq!(
        heldlock::blocking::block_on(held.release()).unwrap(),
        Released::Released
    );
    assert_eq!(vfs.ops().iter().filter(|op| **op == Op::Unlink).count(), 3);
    assert!(!path.exists());
    assert!(trash_in(dir.path()).is_empty());
    assert_eq!(watcher.events(), vec![], "the victim was touched");
    assert_eq!(snap(&victim), before);
}

/// Reads of a 10 MiB file at the lock path, seen from the file system:
/// never more than 4 KiB asked for or returned, the file is refused, and it
/// is never written, moved or removed.
#[test]
fn reads_of_a_huge_lock_file_are_capped_at_4_kib() {
    let (_dir, path) = lock_path();
    fs::write(&path, vec![b'x'; 10 << 20]).unwrap();
    let vfs = FaultVfs::new();
    let lock = lock_on(
        &path,
        &vfs,
        heldlock::blocking::ThreadRuntime,
        busy(),
        false,
    );
    let outcome = heldlock::blocking::block_on(lock.acquire());
    assert!(
        matches!(
            outcome,
            Err(Error::Backend(BackendError::NotALockFile { size, .. })) if size == 10 << 20
        ),
        "{outcome:?}"
    );
    let reads = vfs.reads();
    assert!(!reads.is_empty());
    assert!(
        reads.iter().all(|&(max, got)| max <= 4096 && got <= 4096),
        "{reads:?}"
    );
    for op in [Op::Write, Op::SetMtime, Op::Rename, Op::Link, Op::Unlink] {
        assert!(!vfs.ops().contains(&op), "{op:?}: {:?}", vfs.ops());
    }
    assert_eq!(fs::metadata(&path).unwrap().len(), 10 << 20);
}

// ---------------------------------------------------------------- other users

/// An unreadable lock file, simulated (root reads everything): `EACCES` on
/// every open. It cannot be told from somebody's data: honoured while
/// present, never judged stale or broken however old; only the forced break
/// (`heldlock break --force`) removes it.
#[test]
fn an_unreadable_lock_file_is_honoured_and_never_broken_even_when_old() {
    let (dir, path) = lock_path();
    write_reference_lock(&path, 4242, OTHER_OWNER, SystemTime::now());
    let vfs = FaultVfs::new();
    vfs.fail_from(Op::OpenRead, Errno::ACCESS, 1);
    let expect_timeout = |options: LockOptions| {
        let lock = lock_on(
            &path,
            &vfs,
            heldlock::blocking::ThreadRuntime,
            options,
            false,
        );
        match heldlock::blocking::block_on(lock.acquire()) {
            Err(Error::Timeout {
                holder: Some(Holder::Foreign { summary }),
                ..
            }) => assert_eq!(summary, "<an unreadable file>"),
            other => panic!("expected a timeout on an unreadable lock, got {other:?}"),
        }
    };
    // Fresh: honoured.
    expect_timeout(busy());

    // An hour old, and watched unchanged for longer than `stale`: both the
    // wall-clock rule and the unchanged rule would break a lock. Waited for
    // until `max_wait`, never broken.
    stamp(&path, hour_ago());
    let before = snap(&path);
    vfs.clear_log();
    let stale = Duration::from_millis(200);
    let max_wait = Duration::from_secs(1);
    let started = Instant::now();
    expect_timeout(LockOptions::new(stale).max_wait(max_wait));
    assert!(started.elapsed() >= max_wait, "gave up early");
    for (op, at) in vfs.log() {
        assert!(
            !matches!(
                op,
                Op::Rename | Op::Link | Op::Unlink | Op::SetMtime | Op::Write
            ),
            "{op:?} {}",
            at.display()
        );
        if op == Op::Create {
            assert_eq!(at, path, "only the lock itself is ever created");
        }
    }
    assert_eq!(snap(&path), before);
    assert_eq!(names_in(dir.path()), ["state.lock"]);

    // Forced: seen and removed, unreadable as it is.
    let backend = FsBackend::with_vfs(&path, vfs.clone()).unwrap();
    let observed = match heldlock::blocking::block_on(backend.inspect_anything()).unwrap() {
        Inspection::Present(observed) => observed,
        other => panic!("the file is there: {other:?}"),
    };
    assert!(!observed.breakable);
    assert_eq!(
        observed.holder,
        Holder::Foreign {
            summary: "<an unreadable file>".to_owned()
        }
    );
    match heldlock::blocking::block_on(backend.break_if_unchanged(&observed)) {
        Err(BackendError::NotALock {
            step: Step::Break,
            resource,
            ..
        }) => assert_eq!(resource, path.display().to_string()),
        other => panic!("expected NotALock, got {other:?}"),
    }
    assert_eq!(snap(&path), before);
    assert_eq!(
        heldlock::blocking::block_on(backend.break_anything(&observed)).unwrap(),
        Broke::Broken
    );
    assert!(!path.exists());
    assert!(trash_in(dir.path()).is_empty());

    // The path is free again, even for a lock that cannot reopen its file.
    let lock = lock_on(
        &path,
        &vfs,
        heldlock::blocking::ThreadRuntime,
        busy(),
        false,
    );
    let held = heldlock::blocking::block_on(lock.acquire()).unwrap();
    vfs.heal();
    assert_eq!(
        heldlock::blocking::block_on(held.release()).unwrap(),
        Released::Released
    );
    assert!(!path.exists());
    assert!(trash_in(dir.path()).is_empty());
}

/// A holder whose own lock file cannot be opened by path (a umask without
/// the owner's read bit, simulated here by `EACCES` on every open) must
/// still be able to release it: it holds a descriptor to it.
#[test]
fn a_holder_that_cannot_reopen_its_own_lock_still_releases_it() {
    let (dir, path) = lock_path();
    let vfs = FaultVfs::new();
    let lock = lock_on(
        &path,
        &vfs,
        heldlock::blocking::ThreadRuntime,
        busy(),
        false,
    );
    let held = heldlock::blocking::block_on(lock.acquire()).unwrap();
    vfs.fail_from(Op::OpenRead, Errno::ACCESS, 1);
    assert!(heldlock::blocking::block_on(held.refresh()).unwrap());
    assert_eq!(
        heldlock::blocking::block_on(held.release()).unwrap(),
        Released::Released
    );
    assert!(!path.exists(), "our lock is left behind, to go stale");
    assert!(trash_in(dir.path()).is_empty());
}

/// The same bug for real: a process running as `nobody` under
/// `umask 0477` creates its lock file with mode 0200 and cannot open it for
/// reading by path.
#[test]
fn a_lock_made_under_a_umask_without_owner_read_is_released() {
    if !rustix::process::geteuid().is_root() {
        support::skip(
            "a_lock_made_under_a_umask_without_owner_read_is_released",
            "not root, cannot run a probe as another user",
        );
        return;
    }
    let (_keep, path) = shared_dir(0o777, None, SystemTime::now());
    let script = "umask 0477 && exec \"$0\" \"$@\"";
    let output = Command::new("sh")
        .args([
            "-c",
            script,
            WORKER,
            "probe",
            path.to_str().unwrap(),
            "5000",
            "100",
        ])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert_eq!(out.trim(), "acquired released=Released");
    assert!(!path.exists(), "the lock is left behind");
}

/// Runs the test worker's `probe` as the unprivileged user `nobody`; `None`
/// (after printing why) when this machine cannot.
fn probe_as_nobody(test: &str, lock: &Path, stale_ms: u64, max_wait_ms: u64) -> Option<String> {
    let output = Command::new(WORKER)
        .args(["probe", lock.to_str().unwrap()])
        .arg(stale_ms.to_string())
        .arg(max_wait_ms.to_string())
        .uid(65534)
        .gid(65534)
        .output();
    match output {
        Ok(output) if output.status.success() => {
            Some(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        }
        Ok(output) => {
            support::skip(
                test,
                &format!(
                    "the worker could not run as nobody: {} {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                ),
            );
            None
        }
        Err(error) => {
            support::skip(
                test,
                &format!("cannot start a process as nobody ({error}); needs root"),
            );
            None
        }
    }
}

/// A directory for the other-user tests, with `mode`, holding a root-owned
/// lock file of mode `lock_mode` (none when `None`).
fn shared_dir(
    mode: u32,
    lock_mode: Option<u32>,
    stamp_at: SystemTime,
) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    // The temporary directory itself must be traversable by `nobody`.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let shared = dir.path().join("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(mode)).unwrap();
    let path = shared.join("state.lock");
    if let Some(lock_mode) = lock_mode {
        write_reference_lock(&path, 4242, OTHER_OWNER, stamp_at);
        fs::set_permissions(&path, fs::Permissions::from_mode(lock_mode)).unwrap();
        stamp(&path, stamp_at);
    }
    (dir, path)
}

/// A lock file the other user may not read cannot be told from somebody's
/// data: honoured, and never broken however old, whatever the directory
/// allows.
#[test]
fn a_0600_lock_of_another_user_is_honoured_and_never_broken_even_when_old() {
    if !rustix::process::geteuid().is_root() {
        support::skip(
            "a_0600_lock_of_another_user_is_honoured_and_never_broken_even_when_old",
            "not root, cannot run a probe as another user",
        );
        return;
    }
    for mode in [0o777, 0o1777, 0o755] {
        let (_keep, path) = shared_dir(mode, Some(0o600), hour_ago());
        let before = snap(&path);
        // `stale` 200 ms and a 1 s wait: both the wall-clock rule and the
        // unchanged rule would break a lock.
        let Some(out) = probe_as_nobody(
            "a_0600_lock_of_another_user_is_honoured_and_never_broken_even_when_old",
            &path,
            200,
            1000,
        ) else {
            return;
        };
        assert_eq!(
            out, "timeout holder=a lock without a whole record (\"<an unreadable file>\")",
            "{mode:o}"
        );
        assert_eq!(snap(&path), before, "{mode:o}");
        assert_eq!(names_in(path.parent().unwrap()), ["state.lock"], "{mode:o}");
    }
}

/// A stale lock of another user that the prober may read.
#[test]
fn a_stale_0644_lock_of_another_user_is_broken_only_where_the_directory_allows() {
    if !rustix::process::geteuid().is_root() {
        support::skip(
            "a_stale_0644_lock_of_another_user_is_broken_only_where_the_directory_allows",
            "not root, cannot run a probe as another user",
        );
        return;
    }
    // In a directory anyone may write (no sticky bit): broken, taken and
    // released by the other user.
    let (_keep, path) = shared_dir(0o777, Some(0o644), minute_ago());
    let Some(out) = probe_as_nobody(
        "a_stale_0644_lock_of_another_user_is_broken_only_where_the_directory_allows",
        &path,
        5000,
        5000,
    ) else {
        return;
    };
    assert_eq!(out, "acquired released=Released");
    assert!(!path.exists());
    assert!(trash_in(path.parent().unwrap()).is_empty());

    // In a sticky directory (like /tmp): only the file's owner may move it,
    // so the break fails with a typed error and nothing moves.
    let (_keep, path) = shared_dir(0o1777, Some(0o644), minute_ago());
    let before = snap(&path);
    let out = probe_as_nobody(
        "a_stale_0644_lock_of_another_user_is_broken_only_where_the_directory_allows",
        &path,
        5000,
        5000,
    )
    .unwrap();
    let eperm = Errno::PERM.raw_os_error();
    assert_eq!(
        out,
        format!("error step=break errno={eperm} action=rename the lock file to trash")
    );
    assert_eq!(snap(&path), before);
    assert_eq!(names_in(path.parent().unwrap()), ["state.lock"]);

    // In a directory the other user cannot write: the same, EACCES.
    let (_keep, path) = shared_dir(0o755, Some(0o644), minute_ago());
    let before = snap(&path);
    let out = probe_as_nobody(
        "a_stale_0644_lock_of_another_user_is_broken_only_where_the_directory_allows",
        &path,
        5000,
        5000,
    )
    .unwrap();
    let eacces = Errno::ACCESS.raw_os_error();
    // Breaking starts with the break marker beside the lock: refused first.
    assert_eq!(
        out,
        format!("error step=break errno={eacces} action=create the break marker")
    );
    assert_eq!(snap(&path), before);

    // No lock, and a directory the other user cannot write: the create
    // fails with EACCES, naming the step.
    let (_keep, path) = shared_dir(0o755, None, SystemTime::now());
    let out = probe_as_nobody(
        "a_stale_0644_lock_of_another_user_is_broken_only_where_the_directory_allows",
        &path,
        5000,
        5000,
    )
    .unwrap();
    assert_eq!(
        out,
        format!("error step=create errno={eacces} action=create the lock file")
    );
    assert!(!path.exists());
}
