//! The lock-file protocol on the real file system, one step at a time.
#![allow(clippy::unwrap_used)]

mod support;

use std::fs;
use std::io::Write;
use std::os::unix::net::UnixListener;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, SystemTime};

use heldlock_core::{
    BackendError, Broke, Created, Holder, Inspection, LockBackend, OwnerId, Refreshed, Released,
    Step,
};
use heldlock_fs::{FsBackend, FsError, MAX_READ, record};
use support::*;

// ---------------------------------------------------------------- construction

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

// ---------------------------------------------------------------- try_create

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

// ---------------------------------------------------------------- inspect

#[test]
fn inspect_reports_absent_then_our_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let backend = FsBackend::new(&path).unwrap();
    assert_eq!(block_on(backend.inspect()).unwrap(), Inspection::Absent);
    let record = rec();
    block_on(backend.try_create(&record)).unwrap();
    let observed = observe(&backend);
    assert_eq!(observed.holder, Holder::Record(record));
    assert_eq!(observed.refreshed_at, mtime(&path));
    assert_eq!(
        observe(&backend),
        observed,
        "a second look sees the same lock"
    );
}

#[test]
fn inspect_reads_a_reference_written_lock_as_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let line = "31337 0f8fad5b-d9cb-469f-a165-70867728950e 2026-11-27T10:57:20.123Z\n";
    fs::write(&path, line).unwrap();
    let backend = FsBackend::new(&path).unwrap();
    let record = observe(&backend).holder.record().cloned().unwrap();
    assert_eq!(record.pid, 31337);
    assert_eq!(
        record.owner.as_str(),
        "0f8fad5b-d9cb-469f-a165-70867728950e"
    );
}

#[test]
fn inspect_reports_unparsable_content_as_foreign_with_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    fs::write(&path, b"locked by cron\x1b[31m\n").unwrap();
    let backend = FsBackend::new(&path).unwrap();
    let summary = match observe(&backend).holder {
        Holder::Foreign { summary } => summary,
        other => panic!("expected foreign, got {other:?}"),
    };
    assert_eq!(summary, "locked by cron\\u{1b}[31m\\n");
}

#[test]
fn inspect_reads_at_most_4_kib_of_a_huge_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let mut file = fs::File::create(&path).unwrap();
    file.write_all(&record::encode(&rec()).into_bytes())
        .unwrap();
    file.write_all(&vec![b'x'; 10 << 20]).unwrap();
    drop(file);
    let backend = FsBackend::new(&path).unwrap();
    let observed = observe(&backend);
    assert!(matches!(observed.holder, Holder::Foreign { .. }));
    // The identity carries what was read, plus a fixed 39-byte header.
    assert_eq!(observed.identity.as_bytes().len(), MAX_READ + 39);
    assert_eq!(MAX_READ, 4096);
}

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

#[test]
fn a_symlink_at_the_lock_path_is_foreign_and_breaking_it_removes_only_the_link() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let target = dir.path().join("precious");
    // Even a target holding a valid record must not be read through the link.
    let content = record::encode(&rec()).into_bytes();
    fs::write(&target, &content).unwrap();
    std::os::unix::fs::symlink(&target, &path).unwrap();
    let backend = FsBackend::new(&path).unwrap();

    assert_eq!(
        block_on(backend.try_create(&rec())).unwrap(),
        Created::Exists
    );
    let observed = observe(&backend);
    assert_eq!(
        observed.holder,
        Holder::Foreign {
            summary: "<a symbolic link>".to_owned()
        }
    );
    assert_eq!(observed.refreshed_at, mtime(&path), "the link's own mtime");

    assert_eq!(
        block_on(backend.break_if_unchanged(&observed)).unwrap(),
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
    assert!(matches!(observe(&backend).holder, Holder::Foreign { .. }));
    assert!(!exists(&target));
}

#[test]
fn a_fifo_or_socket_at_the_lock_path_never_blocks_and_is_breakable() {
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
        let (tx, rx) = mpsc::channel();
        let probe = path.clone();
        // On another thread, so a blocking open fails the test instead of
        // hanging it.
        thread::spawn(move || {
            let backend = FsBackend::new(&probe).unwrap();
            let observed = observe(&backend);
            let broke = block_on(backend.break_if_unchanged(&observed)).unwrap();
            tx.send((observed.holder, broke)).unwrap();
        });
        let (holder, broke) = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("inspecting {} blocked", path.display()));
        assert_eq!(
            holder,
            Holder::Foreign {
                summary: "<a FIFO, socket or device>".to_owned()
            }
        );
        assert_eq!(broke, Broke::Broken);
        assert!(!exists(&path));
    }
    assert!(trash_in(dir.path()).is_empty());
}

// ---------------------------------------------------------------- refresh

#[test]
fn refresh_stamps_our_lock_while_it_is_ours() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let backend = FsBackend::new(&path).unwrap();
    let record = rec();
    block_on(backend.try_create(&record)).unwrap();
    set_mtime(&path, long_ago());
    let now = long_ago() + Duration::from_secs(3600);
    assert_eq!(
        block_on(backend.refresh(&record.owner, now)).unwrap(),
        Refreshed::Refreshed
    );
    assert_eq!(mtime(&path), now);
}

#[test]
fn refresh_of_an_unknown_owner_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let backend = FsBackend::new(&path).unwrap();
    block_on(backend.try_create(&rec())).unwrap();
    let stamp = mtime(&path);
    let stranger = OwnerId::random();
    assert_eq!(
        block_on(backend.refresh(&stranger, SystemTime::now())).unwrap(),
        Refreshed::Lost
    );
    assert_eq!(mtime(&path), stamp);
}

#[test]
fn refresh_is_lost_after_a_peer_replaced_the_lock_and_leaves_its_stamp_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let backend = FsBackend::new(&path).unwrap();
    let record = rec();
    block_on(backend.try_create(&record)).unwrap();
    // Even a copy of our own record on another inode is not our lock.
    for content in [other_owner_record(), record::encode(&record).into_bytes()] {
        replace(&path, &content, long_ago());
        assert_eq!(
            block_on(backend.refresh(&record.owner, SystemTime::now())).unwrap(),
            Refreshed::Lost
        );
        assert_eq!(mtime(&path), long_ago(), "the replacement was touched");
        assert_eq!(fs::read(&path).unwrap(), content);
    }
}

#[test]
fn refresh_is_lost_after_an_in_place_rewrite_naming_another_owner() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let backend = FsBackend::new(&path).unwrap();
    let record = rec();
    block_on(backend.try_create(&record)).unwrap();
    let ino = inode(&path);
    rewrite_in_place(&path, &other_owner_record());
    set_mtime(&path, long_ago());
    assert_eq!(inode(&path), ino, "same inode, other owner");
    assert_eq!(
        block_on(backend.refresh(&record.owner, SystemTime::now())).unwrap(),
        Refreshed::Lost
    );
    assert_eq!(mtime(&path), long_ago());
}

#[test]
fn refresh_is_lost_once_the_lock_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let backend = FsBackend::new(&path).unwrap();
    let record = rec();
    block_on(backend.try_create(&record)).unwrap();
    fs::remove_file(&path).unwrap();
    assert_eq!(
        block_on(backend.refresh(&record.owner, SystemTime::now())).unwrap(),
        Refreshed::Lost
    );
    assert!(!exists(&path));
}

// ---------------------------------------------------------------- release

#[test]
fn release_removes_our_lock_and_leaves_no_trash() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let backend = FsBackend::new(&path).unwrap();
    let record = rec();
    block_on(backend.try_create(&record)).unwrap();
    assert_eq!(
        block_on(backend.release(&record.owner)).unwrap(),
        Released::Released
    );
    assert!(!exists(&path));
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    // The owner is forgotten: a second release finds nothing.
    assert_eq!(
        block_on(backend.release(&record.owner)).unwrap(),
        Released::Absent
    );
}

#[test]
fn release_leaves_a_replacement_exactly_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let backend = FsBackend::new(&path).unwrap();
    let record = rec();
    for content in [other_owner_record(), record::encode(&record).into_bytes()] {
        block_on(backend.try_create(&record)).unwrap();
        replace(&path, &content, long_ago());
        let ino = inode(&path);
        assert_eq!(
            block_on(backend.release(&record.owner)).unwrap(),
            Released::NotOurs
        );
        assert_eq!(fs::read(&path).unwrap(), content, "byte-identical");
        assert_eq!(inode(&path), ino, "never moved out and back");
        assert_eq!(mtime(&path), long_ago());
        assert!(trash_in(dir.path()).is_empty());
        fs::remove_file(&path).unwrap();
    }
}

#[test]
fn release_when_nothing_is_there_is_absent() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let backend = FsBackend::new(&path).unwrap();
    let record = rec();
    block_on(backend.try_create(&record)).unwrap();
    fs::remove_file(&path).unwrap();
    assert_eq!(
        block_on(backend.release(&record.owner)).unwrap(),
        Released::Absent
    );
    assert_eq!(
        block_on(backend.release(&OwnerId::random())).unwrap(),
        Released::Absent
    );
}

#[test]
fn release_blocking_releases_on_the_real_file_system() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let backend = FsBackend::new(&path).unwrap();
    let record = rec();
    block_on(backend.try_create(&record)).unwrap();
    let other = OwnerId::random();
    assert!(matches!(
        backend.release_blocking(&other),
        Some(Ok(Released::NotOurs))
    ));
    assert!(exists(&path));
    assert!(matches!(
        backend.release_blocking(&record.owner),
        Some(Ok(Released::Released))
    ));
    assert!(!exists(&path));
}

// ---------------------------------------------------------------- break

#[test]
fn break_removes_an_unchanged_stale_lock_and_leaves_no_trash() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let holder = FsBackend::new(&path).unwrap();
    let contender = FsBackend::new(&path).unwrap();
    let record = rec();
    block_on(holder.try_create(&record)).unwrap();
    set_mtime(&path, long_ago());
    let observed = observe(&contender);
    assert_eq!(observed.refreshed_at, long_ago());
    assert_eq!(
        block_on(contender.break_if_unchanged(&observed)).unwrap(),
        Broke::Broken
    );
    assert!(!exists(&path));
    assert!(trash_in(dir.path()).is_empty());
    // The broken holder finds out.
    assert_eq!(
        block_on(holder.refresh(&record.owner, SystemTime::now())).unwrap(),
        Refreshed::Lost
    );
    assert_eq!(
        block_on(contender.break_if_unchanged(&observed)).unwrap(),
        Broke::Absent
    );
}

#[test]
fn behavior_15_break_leaves_a_replacement_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let backend = FsBackend::new(&path).unwrap();
    block_on(backend.try_create(&rec())).unwrap();
    let observed = observe(&backend);
    // A replacement with the very same content and stamp, on a new inode.
    let content = fs::read(&path).unwrap();
    replace(&path, &content, observed.refreshed_at);
    let ino = inode(&path);
    assert_eq!(
        block_on(backend.break_if_unchanged(&observed)).unwrap(),
        Broke::Changed
    );
    assert_eq!(fs::read(&path).unwrap(), content);
    assert_eq!(inode(&path), ino);
    assert_eq!(mtime(&path), observed.refreshed_at);
    assert!(trash_in(dir.path()).is_empty());
}

#[test]
fn break_after_a_refresh_is_changed() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let backend = FsBackend::new(&path).unwrap();
    let record = rec();
    block_on(backend.try_create(&record)).unwrap();
    set_mtime(&path, long_ago());
    let observed = observe(&backend);
    let now = long_ago() + Duration::from_secs(1);
    block_on(backend.refresh(&record.owner, now)).unwrap();
    assert_eq!(
        block_on(backend.break_if_unchanged(&observed)).unwrap(),
        Broke::Changed
    );
    assert_eq!(mtime(&path), now);
    assert_eq!(
        block_on(backend.refresh(&record.owner, now)).unwrap(),
        Refreshed::Refreshed
    );
}

#[test]
fn break_after_an_in_place_rewrite_is_changed() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    fs::write(&path, b"foreign v1").unwrap();
    set_mtime(&path, long_ago());
    let backend = FsBackend::new(&path).unwrap();
    let observed = observe(&backend);
    rewrite_in_place(&path, b"foreign v2");
    set_mtime(&path, long_ago());
    assert_eq!(
        block_on(backend.break_if_unchanged(&observed)).unwrap(),
        Broke::Changed
    );
    assert_eq!(fs::read(&path).unwrap(), b"foreign v2");
    // Observed afresh, the foreign lock is breakable.
    let observed = observe(&backend);
    assert_eq!(
        block_on(backend.break_if_unchanged(&observed)).unwrap(),
        Broke::Broken
    );
    assert!(!exists(&path));
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

#[test]
fn a_lock_recreated_on_a_reused_inode_with_a_copied_record_is_another_lock() {
    use heldlock_fs::Vfs;
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let (a, b, c) = (
        FsBackend::new(&path).unwrap(),
        FsBackend::new(&path).unwrap(),
        FsBackend::new(&path).unwrap(),
    );
    let record = rec();
    block_on(a.try_create(&record)).unwrap();
    let first = observe(&c);
    let first_inode = inode(&path);
    block_on(a.release(&record.owner)).unwrap();
    block_on(b.try_create(&record)).unwrap();
    let second = observe(&c);
    let birth = block_on(heldlock_fs::RealFs.lstat(&path)).unwrap().birth;
    if inode(&path) == first_inode && birth.is_none() {
        // Same inode, content and stamp, and no birth time to tell them
        // apart: this file system cannot distinguish the two instances.
        eprintln!("skipped: inode reused and no birth time on this file system");
        return;
    }
    assert_ne!(first.identity, second.identity);
    assert_eq!(
        block_on(c.break_if_unchanged(&first)).unwrap(),
        Broke::Changed
    );
    assert_eq!(observe(&c), second);
}
