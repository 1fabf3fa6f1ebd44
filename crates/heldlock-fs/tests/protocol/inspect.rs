//! `inspect` of a regular file at the lock path: our record, another
//! implementation's, a partial one, and files that are no lock at all.

use std::fs;
use std::io::Write;
use std::time::{Duration, SystemTime};

use heldlock_core::{BackendError, Created, Holder, Inspection, LockBackend, Step};
use heldlock_fs::{FsBackend, MAX_READ, record};

use crate::support::*;

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
fn inspect_refuses_a_file_that_is_not_a_lock_with_its_size_and_an_escaped_excerpt() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let content = b"locked by cron\x1b[31m\n";
    fs::write(&path, content).unwrap();
    // Even an hour old, it is nobody's lock: refused, never broken.
    set_mtime(&path, SystemTime::now() - Duration::from_secs(3600));
    let before = (inode(&path), mtime(&path));
    let backend = FsBackend::new(&path).unwrap();
    let err = block_on(backend.inspect()).unwrap_err();
    match &err {
        BackendError::NotALockFile {
            step,
            resource,
            size,
            excerpt,
        } => {
            assert_eq!(*step, Step::Inspect);
            assert_eq!(resource, &path.display().to_string());
            assert_eq!(*size, content.len() as u64);
            assert_eq!(excerpt, "locked by cron\\u{1b}[31m\\n");
        }
        other => panic!("expected NotALockFile, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("not a lock file"), "{message}");
    assert!(!message.chars().any(char::is_control), "{message:?}");
    assert_eq!(
        block_on(backend.try_create(&rec())).unwrap(),
        Created::Exists
    );
    assert_eq!(fs::read(&path).unwrap(), content, "untouched");
    assert_eq!((inode(&path), mtime(&path)), before);
    assert!(trash_in(dir.path()).is_empty());
}

#[test]
fn inspect_reports_an_empty_or_partial_record_as_foreign_with_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let backend = FsBackend::new(&path).unwrap();
    // A holder that crashed between its create and its write, or in the
    // middle of its write (here inside a field's key, before its `=`); a
    // field may carry anything but white space, so the summary still
    // escapes control characters.
    let cases: [(&[u8], &str); 3] = [
        (b"", "<an empty lock file>"),
        (b"4242 0f8fad5b", "4242 0f8fad5b"),
        (
            b"1 0f8fad5b-d9cb-469f-a165-70867728950e 2026-11-27T10:57:20Z n\x1b[31m",
            "1 0f8fad5b-d9cb-469f-a165-70867728950e 2026-11-27T10:57:20Z n\\u{1b}[31m",
        ),
    ];
    for (content, expected) in cases {
        fs::write(&path, content).unwrap();
        let observed = observe(&backend);
        assert_eq!(
            observed.holder,
            Holder::Foreign {
                summary: expected.to_owned()
            },
            "{content:?}"
        );
        assert!(observed.breakable, "a crashed holder's lock goes stale");
    }
}

#[test]
fn inspect_reads_at_most_4_kib_and_refuses_a_huge_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = lock_path(dir.path());
    let head = record::encode(&rec()).into_bytes();
    let mut file = fs::File::create(&path).unwrap();
    file.write_all(&head).unwrap();
    file.write_all(&vec![b'x'; 10 << 20]).unwrap();
    drop(file);
    let size = (head.len() + (10 << 20)) as u64;
    let backend = FsBackend::new(&path).unwrap();
    // Whatever its first bytes say, a file larger than the read cap cannot
    // be a one-line record.
    match block_on(backend.inspect()).unwrap_err() {
        BackendError::NotALockFile {
            step: Step::Inspect,
            size: got,
            excerpt,
            ..
        } => {
            assert_eq!(got, size);
            assert!(excerpt.starts_with("4242 "), "{excerpt}");
            assert!(excerpt.ends_with('…'), "{excerpt}");
            assert!(excerpt.chars().count() <= 80, "{excerpt}");
        }
        other => panic!("expected NotALockFile, got {other:?}"),
    }
    assert_eq!(fs::metadata(&path).unwrap().len(), size, "untouched");

    // At the cap exactly, the start of a record (a holder that crashed
    // while writing a very long field key) is still a lock; its identity
    // carries what was read, plus a fixed 39-byte header. One byte more and
    // it is no lock.
    assert_eq!(MAX_READ, 4096);
    let mut partial =
        b"4242 0f8fad5b-d9cb-469f-a165-70867728950e 2026-11-27T10:57:20.000Z note".to_vec();
    partial.resize(MAX_READ, b'y');
    fs::write(&path, &partial).unwrap();
    let observed = observe(&backend);
    assert!(matches!(observed.holder, Holder::Foreign { .. }));
    assert!(observed.breakable);
    assert_eq!(observed.identity.as_bytes().len(), MAX_READ + 39);
    partial.push(b'y');
    fs::write(&path, &partial).unwrap();
    assert!(matches!(
        block_on(backend.inspect()).unwrap_err(),
        BackendError::NotALockFile { size, .. } if size == MAX_READ as u64 + 1
    ));
}
