//! What a regular file at the lock path holds. What a crashed holder leaves
//! (an empty file, the start of a record) is honoured while fresh and broken
//! only once stale; anything else is somebody's file, refused at once however
//! old, read no further than 4 KiB, and left exactly as it was. A record's
//! time is only informational, and stamps far in the future or past go
//! stale by the rules, not by the record.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use heldlock_core::{BackendError, Error, Holder, LockOptions, Step};

use crate::api::{Api, Outcome, busy, on_each_api, patient};
use crate::observe::{Watcher, assert_no_change, hour_ago, minute_ago, names_in, snap, stamp};
use crate::support::*;
use crate::vfs_faults::{FaultVfs, Op, Warnings, lock_on};

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
