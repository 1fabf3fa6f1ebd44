//! What stands at the lock path but is no regular file (a directory, a
//! symbolic link, a FIFO, a socket): refused, never followed or opened, and
//! removed only by a forced break.

use std::fs;
use std::os::unix::net::UnixListener;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, SystemTime};

use heldlock_core::{BackendError, Broke, Created, Holder, Inspection, LockBackend, Step};
use heldlock_fs::{FsBackend, record};

use crate::support::*;

#[test]
fn inspect_of_a_directory_is_not_a_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    fs::create_dir(&path).unwrap();
    let backend = FsBackend::new(&path).unwrap();
    let err = block_on(backend.inspect()).unwrap_err();
    assert!(
        matches!(
            err,
            BackendError::NotALock {
                step: Step::Inspect,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("a directory"), "{err}");
    assert_eq!(
        block_on(backend.try_create(&rec())).unwrap(),
        Created::Exists
    );
    assert!(path.is_dir());
}

/// Asserts that `err` is the refusal of inspect of a `what` (not a regular
/// file) at `path`.
fn assert_not_a_lock(err: &BackendError, step: Step, path: &std::path::Path, what: &str) {
    match err {
        BackendError::NotALock {
            step: got_step,
            resource,
            what: got_what,
        } => {
            assert_eq!(*got_step, step, "{err}");
            assert_eq!(resource, &path.display().to_string(), "{err}");
            assert_eq!(got_what, what, "{err}");
        }
        other => panic!("expected NotALock ({what}), got {other:?}"),
    }
}

/// Sets the mtime of `path` itself (a link, a FIFO), without opening it.
fn stamp_nofollow(path: &std::path::Path, when: SystemTime) {
    let since = when.duration_since(std::time::UNIX_EPOCH).unwrap();
    let times = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: i64::try_from(since.as_secs()).unwrap(),
            tv_nsec: since.subsec_nanos().into(),
        },
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

#[test]
fn a_symlink_at_the_lock_path_is_refused_and_only_a_forced_break_removes_only_the_link() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let target = dir.path().join("precious");
    // Even a target holding a valid record must not be read through the link.
    let content = record::encode(&rec()).into_bytes();
    fs::write(&target, &content).unwrap();
    std::os::unix::fs::symlink(&target, &path).unwrap();
    // An hour old by its own mtime: still never broken.
    stamp_nofollow(&path, long_ago());
    let backend = FsBackend::new(&path).unwrap();

    assert_eq!(
        block_on(backend.try_create(&rec())).unwrap(),
        Created::Exists
    );
    let err = block_on(backend.inspect()).unwrap_err();
    assert_not_a_lock(&err, Step::Inspect, &path, "a symbolic link");
    assert!(err.to_string().contains("a symbolic link"), "{err}");
    assert_eq!(fs::read_link(&path).unwrap(), target, "the link is left");
    assert_eq!(mtime(&path), long_ago(), "the link's own mtime, untouched");
    assert_eq!(fs::read(&target).unwrap(), content, "target untouched");

    // Forced (`heldlock break --force`): observed as it is, never followed.
    let observed = match block_on(backend.inspect_anything()).unwrap() {
        Inspection::Present(observed) => observed,
        other => panic!("the link is there: {other:?}"),
    };
    assert_eq!(
        observed.holder,
        Holder::Foreign {
            summary: "<a symbolic link>".to_owned()
        }
    );
    assert!(!observed.breakable);
    assert_eq!(observed.refreshed_at, long_ago(), "the link's own mtime");
    // What a forced look saw is still never broken by the unforced break.
    assert!(matches!(
        block_on(backend.break_if_unchanged(&observed)).unwrap_err(),
        BackendError::NotALock {
            step: Step::Break,
            ..
        }
    ));
    assert!(exists(&path));

    assert_eq!(
        block_on(backend.break_anything(&observed)).unwrap(),
        Broke::Broken
    );
    assert!(!exists(&path));
    assert_eq!(fs::read(&target).unwrap(), content, "target untouched");
    assert!(trash_in(dir.path()).is_empty());
}

#[test]
fn a_dangling_symlink_is_never_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let target = dir.path().join("elsewhere");
    std::os::unix::fs::symlink(&target, &path).unwrap();
    let backend = FsBackend::new(&path).unwrap();
    assert_eq!(
        block_on(backend.try_create(&rec())).unwrap(),
        Created::Exists
    );
    let err = block_on(backend.inspect()).unwrap_err();
    assert_not_a_lock(&err, Step::Inspect, &path, "a symbolic link");
    assert_eq!(fs::read_link(&path).unwrap(), target);
    assert!(!exists(&target));
}

#[test]
fn a_fifo_or_socket_at_the_lock_path_never_blocks_and_only_a_forced_break_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.lock");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
    )
    .unwrap();
    let socket = dir.path().join("socket.lock");
    let _listener = UnixListener::bind(&socket).unwrap();

    for path in [fifo, socket] {
        stamp_nofollow(&path, long_ago());
        let (tx, rx) = mpsc::channel();
        let probe = path.clone();
        // On another thread, so a blocking open fails the test instead of
        // hanging it.
        thread::spawn(move || {
            let backend = FsBackend::new(&probe).unwrap();
            let refused = block_on(backend.inspect()).unwrap_err();
            let still_there = exists(&probe);
            let observed = match block_on(backend.inspect_anything()).unwrap() {
                Inspection::Present(observed) => observed,
                other => panic!("the node is there: {other:?}"),
            };
            let unforced = block_on(backend.break_if_unchanged(&observed)).unwrap_err();
            let broke = block_on(backend.break_anything(&observed)).unwrap();
            tx.send((refused, still_there, observed, unforced, broke))
                .unwrap();
        });
        let (refused, still_there, observed, unforced, broke) = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("inspecting {} blocked", path.display()));
        assert_not_a_lock(&refused, Step::Inspect, &path, "a FIFO, socket or device");
        assert!(still_there, "refused, and left in place");
        assert_eq!(
            observed.holder,
            Holder::Foreign {
                summary: "<a FIFO, socket or device>".to_owned()
            }
        );
        assert!(!observed.breakable);
        assert_eq!(unforced.step(), Step::Break, "{unforced}");
        assert!(matches!(unforced, BackendError::NotALock { .. }));
        assert_eq!(broke, Broke::Broken);
        assert!(!exists(&path));
    }
    assert!(trash_in(dir.path()).is_empty());
}
