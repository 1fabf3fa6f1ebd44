//! The sweep of abandoned trash: `<lock>.breaking.<id>` and
//! `<lock>.releasing.<id>` files (and break markers) that a process killed
//! between its rename to trash and its unlink left beside the lock.
//!
//! A sweep lists the lock's whole directory, which costs in proportion to
//! what else lives there (seconds in a large cache directory), so it never
//! runs on the acquiring task: on the real file system it runs on a thread
//! of its own, and at most once per lock and process per trash age, except
//! right after a break (a dead holder is exactly who leaves trash). A
//! simulated file system sweeps through its `Vfs`, once per backend and
//! after each break, so that its steps stay scheduling points.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use super::FsBackend;
use crate::throttle::Throttle;
use crate::vfs::{FileKind, Vfs};

/// When this process last swept each lock's trash (directory, lock name).
static SWEPT: Throttle<(PathBuf, OsString)> = Throttle::new();

/// Whether `name` is one of the trash names (or a break marker) of the lock
/// file `lock`: `<lock>.(breaking|releasing|break).<32 hex digits>`.
pub(super) fn is_trash_of(lock: &OsStr, name: &OsStr) -> bool {
    let Some(rest) = name
        .as_bytes()
        .strip_prefix(lock.as_bytes())
        .and_then(|r| r.strip_prefix(b"."))
    else {
        return false;
    };
    let id = rest
        .strip_prefix(b"breaking.")
        .or_else(|| rest.strip_prefix(b"releasing."))
        .or_else(|| rest.strip_prefix(b"break."));
    id.is_some_and(|id| id.len() == 32 && id.iter().all(u8::is_ascii_hexdigit))
}

impl<V: Vfs> FsBackend<V> {
    /// Sweeps this lock's abandoned trash if it is due (see the module
    /// docs): after this backend's first create, and again after each
    /// successful break.
    pub(super) async fn sweep_if_due(&self) {
        let Some(max_age) = self.trash_max_age else {
            return;
        };
        let after_break = self.broke.swap(false, Ordering::Relaxed);
        let first = !self.swept_once.swap(true, Ordering::Relaxed);
        if !(first || after_break) {
            return;
        }
        let dir = if self.dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            self.dir.clone()
        };
        if V::NOTIFIES {
            if !SWEPT.due((dir.clone(), self.file_name.clone()), max_age, after_break) {
                return;
            }
            // The real file system: on a thread of its own, never on the
            // acquiring task. A thread that cannot start only skips it.
            let lock = self.file_name.clone();
            let _ = std::thread::Builder::new()
                .name("heldlock-sweep".into())
                .spawn(move || sweep_real(&dir, &lock, max_age));
        } else {
            self.sweep_through_vfs(&dir, max_age).await;
        }
    }

    /// The sweep through the [`Vfs`], for file systems that are not the
    /// real one (a simulator's, whose steps are its scheduling points).
    async fn sweep_through_vfs(&self, dir: &Path, max_age: Duration) {
        let Ok(names) = self.vfs.list_dir(dir).await else {
            return;
        };
        let now = self.vfs.wall_clock();
        for name in names.iter().filter(|n| is_trash_of(&self.file_name, n)) {
            let path = self.dir.join(name);
            let abandoned = match self.vfs.lstat(&path).await {
                Ok(meta) => {
                    meta.kind == FileKind::File
                        && now
                            .duration_since(meta.mtime)
                            .is_ok_and(|age| age > max_age)
                }
                Err(_) => false,
            };
            if abandoned && self.vfs.unlink(&path).await.is_ok() {
                tracing::info!(trash = %path.display(), "removed abandoned lock trash");
            }
        }
    }
}

/// The sweep on the real file system: regular files only (never a followed
/// link or a directory), older than `max_age` by their modification time.
fn sweep_real(dir: &Path, lock: &OsStr, max_age: Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !is_trash_of(lock, &name) {
            continue;
        }
        let path = dir.join(&name);
        let abandoned = std::fs::symlink_metadata(&path).is_ok_and(|meta| {
            meta.file_type().is_file()
                && meta
                    .modified()
                    .is_ok_and(|at| now.duration_since(at).is_ok_and(|age| age > max_age))
        });
        if abandoned && std::fs::remove_file(&path).is_ok() {
            tracing::info!(trash = %path.display(), "removed abandoned lock trash");
        }
    }
}
