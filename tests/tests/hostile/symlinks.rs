//! Symbolic links at the lock path or at the names the protocol moves
//! things to: refused, replaced or removed as links, never followed, so the
//! file they point at is never opened, changed or made.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use heldlock_core::Released;

use crate::api::{Api, Outcome, on_each_api, patient, refused_kind};
use crate::observe::{Snap, Watcher, hour_ago, minute_ago, names_in, snap, stamp};
use crate::support::*;
use crate::vfs_faults::{FaultVfs, Op, Warnings, lock_on};

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
