//! What every fault test starts from: the scenarios (what stands at the
//! lock path before the acquisition), a case (the lock's directory, a
//! fault-injecting file system, the warnings, the peer's lock as it was)
//! and the options each scenario is taken with.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use heldlock_core::LockOptions;
use heldlock_tokio::TokioRuntime;

use crate::support::*;
use crate::vfs_faults::{FaultVfs, Warnings, lock_on};

/// Whether anything (even a dangling link) is at `path`.
pub(crate) fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scenario {
    /// Nothing at the lock path.
    Free,
    /// Nothing at the lock path, and `fsync` asked for.
    FreeSynced,
    /// The lock's directory does not exist yet.
    NoParent,
    /// A peer's fresh lock: waited for, never touched.
    FreshPeer,
    /// A peer's stale lock: broken, then ours created.
    StalePeer,
}

pub(crate) struct Case {
    _dir: tempfile::TempDir,
    pub(crate) dir: PathBuf,
    pub(crate) path: PathBuf,
    pub(crate) vfs: FaultVfs,
    pub(crate) warnings: Warnings,
    /// The peer's lock as it was: (inode, content, mtime).
    pub(crate) peer: Option<(u64, Vec<u8>, SystemTime)>,
}

impl Case {
    pub(crate) fn new(scenario: Scenario) -> Self {
        let (dir, mut path) = lock_path();
        if scenario == Scenario::NoParent {
            path = dir.path().join("sub").join("state.lock");
        }
        let peer_at = match scenario {
            Scenario::FreshPeer => Some(SystemTime::now()),
            Scenario::StalePeer => Some(ago(Duration::from_secs(60))),
            _ => None,
        };
        let peer = peer_at.map(|at| {
            let content = write_reference_lock(&path, 4242, OTHER_OWNER, at);
            set_mtime(&path, at);
            let meta = fs::metadata(&path).unwrap();
            (meta.ino(), content.into_bytes(), mtime(&path))
        });
        Case {
            dir: dir.path().to_path_buf(),
            _dir: dir,
            path,
            vfs: FaultVfs::new(),
            warnings: Warnings::default(),
            peer,
        }
    }

    pub(crate) fn lock(&self, scenario: Scenario, options: LockOptions) -> heldlock_core::Lock {
        let options = self.warnings.hook(options);
        lock_on(
            &self.path,
            &self.vfs,
            TokioRuntime,
            options,
            scenario == Scenario::FreeSynced,
        )
    }

    /// Whether the peer's lock is still exactly as it was.
    pub(crate) fn peer_intact(&self) -> bool {
        let Some((ino, content, at)) = &self.peer else {
            return false;
        };
        fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == *ino)
            && fs::read(&self.path).is_ok_and(|c| c == *content)
            && mtime(&self.path) == *at
    }
}

pub(crate) fn options(scenario: Scenario) -> LockOptions {
    let options = LockOptions::new(Duration::from_secs(60));
    if scenario == Scenario::FreshPeer {
        options.max_wait(Duration::from_millis(150))
    } else {
        options.max_wait(Duration::from_secs(10))
    }
}

/// Options for a held lock whose heartbeat stays out of the way (20 s).
pub(crate) fn quiet() -> LockOptions {
    LockOptions::new(Duration::from_secs(60))
}
