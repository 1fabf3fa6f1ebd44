//! `inspect` of a lock it cannot read, or of a path that is no regular
//! file, and how its failures are reported.

use std::fs;
use std::io;

use heldlock_core::{BackendError, Holder, LockBackend, Step};
use heldlock_fs::record;

use crate::hooked::hooked;
use crate::support::*;

#[test]
fn an_unreadable_lock_is_foreign_not_an_error_and_never_broken() {
    for op in ["open_read", "read_capped"] {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(dir.path());
        let content = record::encode(&rec());
        fs::write(&path, &content).unwrap();
        set_mtime(&path, long_ago());
        let (backend, vfs) = hooked(&path);
        vfs.fail(op, 1, io::ErrorKind::PermissionDenied);
        let observed = observe(&backend);
        assert_eq!(
            observed.holder,
            Holder::Foreign {
                summary: "<an unreadable file>".to_owned()
            },
            "{op}"
        );
        assert_eq!(observed.refreshed_at, mtime(&path));
        // It cannot be told from somebody's data: honoured, never broken,
        // however old, and refused before anything is touched.
        assert!(!observed.breakable, "{op}");
        let before = vfs.log().len();
        let err = block_on(backend.break_if_unchanged(&observed)).unwrap_err();
        assert!(
            matches!(
                err,
                BackendError::NotALock {
                    step: Step::Break,
                    ..
                }
            ),
            "{op}: {err}"
        );
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        assert_eq!(vfs.log()[before..], [] as [&str; 0], "{op}");
        assert_eq!(fs::read(&path).unwrap(), content.as_bytes(), "{op}");
        assert_eq!(mtime(&path), long_ago(), "{op}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "{op}");
    }
}

#[test]
fn inspect_never_opens_a_symlink_fifo_or_directory() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("link.lock");
    std::os::unix::fs::symlink(dir.path().join("target"), &link).unwrap();
    let fifo = dir.path().join("fifo.lock");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
    )
    .unwrap();
    let sub = dir.path().join("dir.lock");
    fs::create_dir(&sub).unwrap();
    for (path, what) in [
        (link, "a symbolic link"),
        (fifo, "a FIFO, socket or device"),
        (sub, "a directory"),
    ] {
        let (backend, vfs) = hooked(&path);
        match block_on(backend.inspect()) {
            Err(BackendError::NotALock {
                step: Step::Inspect,
                what: got,
                ..
            }) => assert_eq!(got, what),
            other => panic!("{}: expected NotALock, got {other:?}", path.display()),
        }
        assert_eq!(vfs.log(), ["lstat"], "{}", path.display());
    }
}

#[test]
fn an_inspect_failure_is_an_inspect_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    fs::write(&path, b"x").unwrap();
    let (backend, vfs) = hooked(&path);
    vfs.fail("read_capped", 1, io::ErrorKind::Other);
    let err = block_on(backend.inspect()).unwrap_err();
    assert_eq!(err.step(), Step::Inspect);
    assert!(err.to_string().contains("read the lock file"), "{err}");
}
