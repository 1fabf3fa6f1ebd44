//! Making a backend and its first step, `try_create`: which paths it takes,
//! the record it writes, the directories it makes; and the backend as a
//! shared `dyn LockBackend`.

use std::fs;

use heldlock_core::{BackendError, Broke, Created, LockBackend, Released, Step};
use heldlock_fs::{FsBackend, FsError};

use crate::support::*;

#[test]
fn new_refuses_paths_that_name_no_file() {
    assert_eq!(FsBackend::new("").unwrap_err(), FsError::EmptyPath);
    for path in ["/", "state/", "state/.", "state/..", ".", ".."] {
        let err = FsBackend::new(path).unwrap_err();
        assert!(matches!(err, FsError::NoFileName { .. }), "{path}: {err}");
        assert!(err.to_string().contains("add a file name"), "{err}");
    }
    let err = FsBackend::new("a\0b").unwrap_err();
    assert!(matches!(err, FsError::NulInPath { .. }));
    let err = FsBackend::new("x".repeat(250)).unwrap_err();
    assert!(
        matches!(err, FsError::FileNameTooLong { len: 250, .. }),
        "{err}"
    );
    assert!(FsBackend::new("db.lock").is_ok());
    assert!(FsBackend::new("state/../db.lock").is_ok());
}

#[test]
fn try_create_writes_the_reference_record_and_a_second_create_finds_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let backend = FsBackend::new(&path).unwrap();
    let record = rec();
    assert_eq!(
        block_on(backend.try_create(&record)).unwrap(),
        Created::Created
    );
    assert_eq!(
        block_on(backend.try_create(&rec())).unwrap(),
        Created::Exists
    );
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(
        text,
        format!("4242 {} 2026-11-27T10:57:20.000Z\n", record.owner)
    );
}

#[test]
fn try_create_stamps_the_lock_with_the_records_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let backend = FsBackend::new(&path).unwrap();
    let record = record_at(1_700_000_123);
    block_on(backend.try_create(&record)).unwrap();
    assert_eq!(mtime(&path), record.acquired_at);
    assert_eq!(observe(&backend).refreshed_at, record.acquired_at);
}

#[test]
fn try_create_from_a_second_backend_on_the_same_path_finds_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let a = FsBackend::new(&path).unwrap();
    let b = FsBackend::new(&path).unwrap().sync_writes(true);
    assert_eq!(block_on(a.try_create(&rec())).unwrap(), Created::Created);
    assert_eq!(block_on(b.try_create(&rec())).unwrap(), Created::Exists);
}

#[test]
fn try_create_makes_missing_parent_directories() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/c/db.lock");
    let backend = FsBackend::new(&path).unwrap().sync_writes(true);
    assert_eq!(
        block_on(backend.try_create(&rec())).unwrap(),
        Created::Created
    );
    assert!(path.is_file());
}

#[test]
fn try_create_reports_prepare_when_a_file_stands_where_the_parent_should_be() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("blocker"), b"not a directory").unwrap();
    for path in ["blocker/db.lock", "blocker/sub/db.lock"] {
        let backend = FsBackend::new(dir.path().join(path)).unwrap();
        let err = block_on(backend.try_create(&rec())).unwrap_err();
        assert_eq!(err.step(), Step::Prepare, "{path}: {err}");
        assert!(matches!(err, BackendError::Io { .. }));
    }
    assert_eq!(
        fs::read(dir.path().join("blocker")).unwrap(),
        b"not a directory"
    );
}

#[test]
fn relative_lock_paths_work_from_the_current_directory() {
    // The only test that changes directory; it restores it before asserting.
    let dir = tempfile::tempdir().unwrap();
    let before = std::env::current_dir().unwrap();
    std::env::set_current_dir(dir.path()).unwrap();
    let backend = FsBackend::new("db.lock").unwrap();
    let record = rec();
    let created = block_on(backend.try_create(&record)).unwrap();
    let observed = observe(&backend);
    let broke = block_on(backend.break_if_unchanged(&observed)).unwrap();
    std::env::set_current_dir(before).unwrap();
    assert_eq!(created, Created::Created);
    assert_eq!(broke, Broke::Broken);
    assert!(!exists(&dir.path().join("db.lock")));
    assert!(trash_in(dir.path()).is_empty());
}

#[test]
fn an_fs_backend_is_usable_as_a_shared_trait_object() {
    let dir = tempfile::tempdir().unwrap();
    let backend: std::sync::Arc<dyn LockBackend> =
        std::sync::Arc::new(FsBackend::new(lock_path(dir.path())).unwrap());
    let record = rec();
    assert_eq!(
        block_on(backend.try_create(&record)).unwrap(),
        Created::Created
    );
    assert!(backend.resource().ends_with("db.lock"));
    assert!(matches!(
        backend.release_blocking(&record.owner),
        Some(Ok(Released::Released))
    ));
}
