//! Lock files heldlock may not read, and locks of other users. An
//! unreadable file cannot be told from somebody's data: honoured, never
//! broken however old. A holder that cannot reopen its own lock still
//! releases it. A readable stale lock of another user is broken only where
//! the directory allows, with a typed error elsewhere. Simulated with
//! `EACCES` from the file system, and for real as the user `nobody` where
//! this runs as root.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use heldlock_core::{
    BackendError, Broke, Error, Holder, Inspection, LockBackend, LockOptions, Released, Step,
};
use heldlock_fs::FsBackend;
use rustix::io::Errno;

use crate::api::busy;
use crate::observe::{hour_ago, minute_ago, names_in, snap, stamp};
use crate::support::{self, *};
use crate::vfs_faults::{FaultVfs, Op, lock_on};

const WORKER: &str = env!("CARGO_BIN_EXE_heldlock-test-worker");

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
