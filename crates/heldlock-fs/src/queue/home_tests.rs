//! Where the queue files live (`Home`): the runtime directory only when it
//! is private, else a private per-user one in the temporary directory, and
//! no queue (everyone watches) when neither is; no other user opens them.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::tests::{SOON, empties, entries, fixture, no_inotify};
use super::*;
use crate::test_support::completes_within;

/// A home without a runtime directory: a per-user directory in `tmp`.
fn temp_home(tmp: &Path) -> (Home, PathBuf) {
    let home = Home {
        runtime_dir: None,
        temp_dir: tmp.to_path_buf(),
    };
    let per_user = tmp.join(format!("heldlock-{}", rustix::process::geteuid().as_raw()));
    (home, per_user)
}

#[test]
fn without_a_runtime_directory_a_private_one_is_made_in_the_temporary_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (home, per_user) = temp_home(tmp.path());
    let locks = tempfile::tempdir().unwrap();
    let lock = locks.path().join("tmp.lock");
    std::fs::write(&lock, "held").unwrap();
    let Some(waiting) = listen_in(&lock, &home, None) else {
        no_inotify("without_a_runtime_directory_a_private_one_is_made_in_the_temporary_one");
        return;
    };
    let meta = std::fs::symlink_metadata(&per_user).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.mode() & 0o7777, 0o700);
    assert_eq!(meta.uid(), rustix::process::geteuid().as_raw());
    assert_eq!(entries(&per_user).len(), 2, "the queue files are in it");
    assert_eq!(entries(tmp.path()).len(), 1, "and nothing else is made");
    drop(waiting);
    // The empty private directory stays (see `Home::open_dir`).
    assert!(empties(&per_user));
}

/// Whether `home` uses `dir` for its queue files.
fn uses(home: &Home, dir: &Path) -> bool {
    let Ok(opened) = home.open_dir() else {
        return false;
    };
    let opened = rustix::fs::fstat(&opened).unwrap();
    std::fs::symlink_metadata(dir)
        .is_ok_and(|meta| (opened.st_dev, opened.st_ino) == (meta.dev(), meta.ino()))
}

/// Changes the owner of `path` to `nobody`; false when this process
/// may not (it does not run as root).
fn give_away(path: &Path) -> bool {
    match std::os::unix::fs::lchown(path, Some(65534), Some(65534)) {
        Ok(()) => true,
        Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => {
            eprintln!("cannot chown here ({error}); skipping that case");
            false
        }
        Err(error) => panic!("{error}"),
    }
}

#[test]
fn a_runtime_directory_that_is_not_private_is_passed_over() {
    /// Makes the case in a private directory; returns the runtime
    /// directory to give, `None` when the case cannot be made here.
    type Case = fn(&Path) -> Option<PathBuf>;
    let cases: [(&str, Case); 6] = [
        ("usable", |dir| Some(dir.to_path_buf())),
        ("relative", |_| Some(PathBuf::from("relative/runtime"))),
        ("missing", |dir| Some(dir.join("missing"))),
        ("mode 0755", |dir| {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            Some(dir.to_path_buf())
        }),
        ("a symbolic link", |dir| {
            let link = dir.with_extension("link");
            std::os::unix::fs::symlink(dir, &link).unwrap();
            Some(link)
        }),
        ("another user's", |dir| {
            give_away(dir).then(|| dir.to_path_buf())
        }),
    ];
    for (what, runtime_dir) in cases {
        let outer = tempfile::tempdir().unwrap();
        let runtime = outer.path().join("runtime");
        std::fs::create_dir(&runtime).unwrap();
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
        let tmp = outer.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let Some(runtime_dir) = runtime_dir(&runtime) else {
            continue;
        };
        let (mut home, per_user) = temp_home(&tmp);
        home.runtime_dir = Some(runtime_dir);
        if what == "usable" {
            assert!(uses(&home, &runtime), "{what}");
            assert!(
                entries(&tmp).is_empty(),
                "{what}: the temporary one is not made"
            );
        } else {
            assert!(uses(&home, &per_user), "{what}");
        }
    }
}

#[test]
fn a_per_user_directory_that_is_not_private_is_refused_and_everyone_watches() {
    /// Plants something at the per-user directory's name (the first
    /// path), given a private directory (the second); false when the
    /// case cannot be made here.
    type Plant = fn(&Path, &Path) -> bool;
    let cases: [(&str, Plant); 6] = [
        ("mode 0755", |dir, _| {
            std::fs::create_dir(dir).unwrap();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            true
        }),
        ("mode 0701", |dir, _| {
            std::fs::create_dir(dir).unwrap();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o701)).unwrap();
            true
        }),
        ("mode 0770", |dir, _| {
            std::fs::create_dir(dir).unwrap();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o770)).unwrap();
            true
        }),
        ("a symbolic link to a private directory", |dir, target| {
            std::os::unix::fs::symlink(target, dir).unwrap();
            true
        }),
        ("a regular file", |dir, _| {
            std::fs::write(dir, "").unwrap();
            true
        }),
        ("another user's", |dir, _| {
            std::fs::create_dir(dir).unwrap();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
            give_away(dir)
        }),
    ];
    for (what, plant) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let (home, per_user) = temp_home(tmp.path());
        let target = tmp.path().join("target");
        std::fs::create_dir(&target).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700)).unwrap();
        if !plant(&per_user, &target) {
            continue;
        }
        assert!(home.open_dir().is_err(), "{what}");
        let locks = tempfile::tempdir().unwrap();
        let lock = locks.path().join("refused.lock");
        std::fs::write(&lock, "held").unwrap();
        let name = queue_name(&lock).unwrap();
        assert!(join(&home, &name).is_err(), "{what}");
        let Some(watching) = listen_in(&lock, &home, None) else {
            no_inotify("a_per_user_directory_that_is_not_private_is_refused_and_everyone_watches");
            return;
        };
        // No queue: this waiter watches the lock itself, and is woken
        // by the release.
        std::fs::rename(&lock, locks.path().join("refused.lock.releasing.x")).unwrap();
        assert!(completes_within(watching, SOON), "{what}");
        assert!(
            entries(&target).is_empty(),
            "{what}: files in the link's target"
        );
        if std::fs::symlink_metadata(&per_user).unwrap().is_dir() {
            assert!(
                entries(&per_user).is_empty(),
                "{what}: files in the refused directory"
            );
        }
    }
}

/// Whether the user `nobody` can open `path` for reading, as it would
/// to `flock` it.
fn nobody_opens(path: &Path) -> bool {
    use std::os::unix::process::CommandExt;
    std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"exec 3< "$0""#)
        .arg(path)
        .current_dir("/")
        .uid(65534)
        .gid(65534)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[test]
fn another_user_cannot_open_the_queue_files() {
    if rustix::process::geteuid().as_raw() != 0 {
        eprintln!("not root: cannot run a process as another user; skipping");
        return;
    }
    let fx = fixture();
    // The check itself works: `nobody` opens a file it may read.
    let open = tempfile::tempdir().unwrap();
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let readable = open.path().join("readable");
    std::fs::write(&readable, "").unwrap();
    std::fs::set_permissions(&readable, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(nobody_opens(&readable), "the probe cannot open anything");

    let lock = fx.held_lock("private.lock");
    let member = fx.other_process(&lock);
    for name in [&member.turn_name, &member.waiters_name] {
        assert!(
            !nobody_opens(&fx.runtime.path().join(name)),
            "another user opened {name}"
        );
    }
}
