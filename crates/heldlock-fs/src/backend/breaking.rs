//! Breaking a stale lock under a break marker, the markers' expiry, and
//! the sweep of abandoned trash.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use heldlock_core::{BackendError, Broke, Observed, Step};

use super::FsBackend;
use super::claim::Claim;
use super::look::{Look, Nature, Place};
use crate::record;
use crate::vfs::{FileKind, Meta, Vfs, VfsFile};

/// Default of [`FsBackend::expire_break_markers_after`]: far beyond the few
/// system calls a live breaker holds its marker for.
pub const DEFAULT_MARKER_EXPIRY: Duration = Duration::from_secs(60);

/// A break marker seen in the way: its name, inode and stamp, and when this
/// backend first saw it so.
#[derive(Debug)]
pub(super) struct SeenMarker {
    pub(super) path: PathBuf,
    pub(super) ino: u64,
    pub(super) mtime: SystemTime,
    pub(super) since: Instant,
}

impl<V: Vfs> FsBackend<V> {
    pub(super) async fn do_break(
        &self,
        observed: &Observed,
        force: bool,
    ) -> Result<Broke, BackendError> {
        let step = Step::Break;
        let unchanged = |look: &Look| {
            look.identity() == observed.identity && look.meta.mtime == observed.refreshed_at
        };
        // Only a lock is ever broken: what inspect refused, or could not
        // read, is somebody's file unless a person says otherwise.
        if !(observed.breakable || force) {
            tracing::debug!(
                lock = %self.path.display(),
                "refused to break a file that cannot be read"
            );
            return Err(BackendError::NotALock {
                step,
                resource: self.resource_name(),
                what: "a file heldlock cannot read, so cannot tell from a lock".to_owned(),
            });
        }
        #[cfg(feature = "safeguard-switches")]
        if !(self.safeguards.reverify_before_break
            && self.safeguards.recheck_after_rename
            && self.safeguards.break_marker)
        {
            return self.break_unsafely(observed).await;
        }
        let looked = match self.look(&self.path, Place::Lock).await {
            Ok(None) => return Ok(Broke::Absent),
            Ok(Some(look)) if !unchanged(&look) => return Ok(Broke::Changed),
            Ok(Some(look)) if !(force || look.nature() == Nature::Lock) => {
                return Err(self.not_a_lock(step, &look));
            }
            Ok(Some(look)) => look,
            Err(e) => return Err(self.io(step, e.action, e.source)),
        };
        // Only one breaker at a time acts on one stale instance: without
        // this, a breaker that re-verified X could rename away the fresh
        // lock of another breaker that broke X and took the lock meanwhile.
        let marker = self.break_marker(&looked.meta);
        let mine = match self.vfs.create_new(&marker).await {
            Ok(file) => {
                tracing::debug!(marker = %marker.display(), "took the break marker");
                file.fstat().await.ok().map(|meta| (meta.ino, meta.mtime))
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                tracing::debug!(
                    marker = %marker.display(),
                    "another breaker holds the break marker"
                );
                self.remove_marker_if_expired(&marker).await;
                return Ok(Broke::Changed);
            }
            Err(e) => return Err(self.io(step, "create the break marker", e)),
        };
        // Under the marker, look once more: another breaker may have broken
        // X (and a new lock appeared) before we made the marker.
        let outcome = match self.look(&self.path, Place::Lock).await {
            Ok(None) => Ok(Broke::Absent),
            Ok(Some(look)) if !unchanged(&look) => Ok(Broke::Changed),
            Ok(Some(_)) => self
                .claim(step, "breaking", None, unchanged)
                .await
                .map(|claim| match claim {
                    Claim::Absent => Broke::Absent,
                    Claim::Removed => {
                        // Its holder may have died mid-step elsewhere too.
                        self.broke.store(true, Ordering::Relaxed);
                        Broke::Broken
                    }
                    Claim::Restored | Claim::Displaced => Broke::Changed,
                }),
            Err(e) => Err(self.io(step, e.action, e.source)),
        };
        match mine {
            // Ours only if it is still the inode we created: had we been
            // paused past its expiry, the name may be a newer breaker's.
            Some((ino, mtime)) => {
                self.remove_marker_if_same(&marker, ino, mtime).await;
            }
            None => {
                let _ = self.vfs.unlink(&marker).await;
            }
        }
        outcome
    }

    /// The name of the break marker of one stale lock instance: the same in
    /// every process of every host, so that breakers of that instance
    /// exclude each other with `O_EXCL`. It hashes only what every host
    /// sees alike: the inode number, size and modification time (the
    /// lock's stamp). Not the device number (each NFS client numbers its
    /// mounts its own way), not the content (a host that may not read the
    /// file sees none), not the birth time (not every client reports it).
    /// Two instances that share all three share a marker, which only makes
    /// their breakers take turns.
    pub(super) fn break_marker(&self, meta: &Meta) -> PathBuf {
        let stamp = meta
            .mtime
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut bytes = Vec::with_capacity(8 + 8 + 16);
        bytes.extend_from_slice(&meta.ino.to_le_bytes());
        bytes.extend_from_slice(&meta.len.to_le_bytes());
        bytes.extend_from_slice(&stamp.to_le_bytes());
        let mut name = self.file_name.clone();
        name.push(format!(
            ".break.{:016x}{:016x}",
            record::stable_hash(record::FNV_OFFSET_BASIS, &bytes),
            record::stable_hash(0x6c62_272e_07bb_0142, &bytes)
        ));
        self.dir.join(name)
    }

    /// Removes a break marker left by a breaker that died mid-break, so
    /// that the stale lock can be broken at the next attempt: one that our
    /// wall clock says is older than the expiry, or that this backend has
    /// seen unchanged for that long. Younger markers belong to a breaker at
    /// work.
    pub(super) async fn remove_marker_if_expired(&self, marker: &Path) {
        let Ok(meta) = self.vfs.lstat(marker).await else {
            return;
        };
        // Anything but a regular file was not made by a breaker.
        if meta.kind != FileKind::File {
            return;
        }
        let expiry = self.marker_expiry;
        let by_wall_clock = self.marker_wall_clock
            && self
                .vfs
                .wall_clock()
                .duration_since(meta.mtime)
                .is_ok_and(|age| age > expiry);
        let by_watching = {
            let mut seen = self
                .marker_seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match seen.as_ref() {
                Some(s) if s.path == marker && (s.ino, s.mtime) == (meta.ino, meta.mtime) => {
                    self.vfs.monotonic().saturating_duration_since(s.since) > expiry
                }
                _ => {
                    *seen = Some(SeenMarker {
                        path: marker.to_path_buf(),
                        ino: meta.ino,
                        mtime: meta.mtime,
                        since: self.vfs.monotonic(),
                    });
                    false
                }
            }
        };
        if (by_wall_clock || by_watching) && self.replace_expired_marker(marker, &meta).await {
            tracing::info!(marker = %marker.display(), "removed the break marker of a breaker that died");
        }
    }

    /// Removes the expired marker `expired` at `marker` without ever leaving
    /// the name empty while it is not known to be `expired`: a fresh marker
    /// of ours takes its place in one atomic exchange
    /// (`renameat2(RENAME_EXCHANGE)`), and only then is what was swapped
    /// out looked at. Had a live breaker's marker taken the name meanwhile,
    /// it is swapped back: the name held our fresh marker in between, which
    /// no other breaker removes, so nobody could have slipped in. Our own
    /// marker is then removed like any breaker's. Whether the expired one
    /// was removed.
    ///
    /// Where the file system cannot exchange (NFS, some FUSE file systems),
    /// the marker is removed in place when it is still the expired one,
    /// which leaves the window of [`remove_marker_if_same`](Self::remove_marker_if_same).
    async fn replace_expired_marker(&self, marker: &Path, expired: &Meta) -> bool {
        let ours = self.trash_path("breaking");
        let Ok(file) = self.vfs.create_new(&ours).await else {
            return false;
        };
        let mine = file.fstat().await.ok().map(|meta| (meta.ino, meta.mtime));
        drop(file);
        match self.vfs.exchange(&ours, marker).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                let _ = self.vfs.unlink(&ours).await;
                return self
                    .remove_marker_if_same(marker, expired.ino, expired.mtime)
                    .await;
            }
            Err(_) => {
                let _ = self.vfs.unlink(&ours).await;
                return false;
            }
        }
        let was_expired = self.vfs.lstat(&ours).await.is_ok_and(|meta| {
            meta.kind == FileKind::File && (meta.ino, meta.mtime) == (expired.ino, expired.mtime)
        });
        if !was_expired {
            let _ = self.vfs.exchange(&ours, marker).await;
        }
        // Trash either way: the expired marker, or our own swapped back.
        let _ = self.vfs.unlink(&ours).await;
        if was_expired {
            match mine {
                Some((ino, mtime)) => {
                    self.remove_marker_if_same(marker, ino, mtime).await;
                }
                None => {
                    let _ = self.vfs.unlink(marker).await;
                }
            }
        }
        was_expired
    }

    /// Removes the marker at `marker` if it is still the inode `ino` stamped
    /// `mtime`, in place: looked at, then unlinked by name. Never moves the
    /// name away, so another breaker never finds it empty while a live
    /// breaker holds it. The one window left, between the look and the
    /// unlink, needs the marker's own breaker paused past its expiry (its
    /// marker removed and a newer breaker's made meanwhile). Whether it was
    /// removed.
    pub(super) async fn remove_marker_if_same(
        &self,
        marker: &Path,
        ino: u64,
        mtime: SystemTime,
    ) -> bool {
        let same = self.vfs.lstat(marker).await.is_ok_and(|meta| {
            meta.kind == FileKind::File && (meta.ino, meta.mtime) == (ino, mtime)
        });
        same && self.vfs.unlink(marker).await.is_ok()
    }

    /// `do_break` with [`Safeguards::reverify_before_break`] or
    /// [`Safeguards::recheck_after_rename`] off.
    #[cfg(feature = "safeguard-switches")]
    pub(super) async fn break_unsafely(&self, observed: &Observed) -> Result<Broke, BackendError> {
        let step = Step::Break;
        let guards = self.safeguards;
        let unchanged = |look: &Look| {
            look.identity() == observed.identity && look.meta.mtime == observed.refreshed_at
        };
        if guards.reverify_before_break {
            match self.look(&self.path, Place::Lock).await {
                Ok(None) => return Ok(Broke::Absent),
                Ok(Some(look)) if !unchanged(&look) => return Ok(Broke::Changed),
                Ok(Some(_)) => {}
                Err(e) => return Err(self.io(step, e.action, e.source)),
            }
        }
        let is_target = |look: &Look| !guards.recheck_after_rename || unchanged(look);
        Ok(match self.claim(step, "breaking", None, is_target).await? {
            Claim::Absent => Broke::Absent,
            Claim::Removed => Broke::Broken,
            Claim::Restored | Claim::Displaced => Broke::Changed,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::time::{Duration, SystemTime};

    use futures::executor::block_on;
    use heldlock_core::{Broke, Inspection, LockBackend, Observed};

    use super::super::FsBackend;
    use crate::vfs::{FileKind, Meta, RealFs, Vfs, VfsFile};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn meta(dev: u64, ino: u64, len: u64, mtime: SystemTime) -> Meta {
        Meta {
            dev,
            ino,
            kind: FileKind::File,
            len,
            mtime,
            nlink: 1,
            birth: None,
        }
    }

    /// A stale lock left by a holder that crashed mid-write (a record
    /// prefix), an hour old, and what a contender observed of it.
    fn stale_lock(
        dir: &std::path::Path,
    ) -> Result<(FsBackend, Observed), Box<dyn std::error::Error>> {
        let path = dir.join("l.lock");
        fs::write(&path, b"4242 0f8fad5b")?;
        let old = SystemTime::now() - Duration::from_secs(3600);
        let file = fs::File::options().write(true).open(&path)?;
        file.set_modified(old)?;
        let backend = FsBackend::new(&path)?;
        let Inspection::Present(observed) = block_on(backend.inspect())? else {
            return Err("the lock should be there".into());
        };
        Ok((backend, observed))
    }

    fn marker_of(backend: &FsBackend) -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
        let meta = block_on(RealFs.lstat(backend.path()))?;
        Ok(backend.break_marker(&meta))
    }

    fn set_mtime(path: &std::path::Path, when: SystemTime) -> TestResult {
        let file = block_on(RealFs.open_read(path))?;
        block_on(file.set_mtime(when))?;
        Ok(())
    }

    #[test]
    fn a_marker_name_is_the_same_on_every_host() -> TestResult {
        let dir = tempfile::tempdir()?;
        let backend = FsBackend::new(dir.path().join("l.lock"))?;
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_777_040);
        let here = meta(64_769, 42, 9, at);
        // Each NFS client numbers the mount its own way; some report a
        // birth time, some do not.
        let there = Meta {
            dev: 7,
            birth: Some(at),
            ..here
        };
        assert_eq!(backend.break_marker(&here), backend.break_marker(&there));
        for other in [
            meta(64_769, 43, 9, at),
            meta(64_769, 42, 10, at),
            meta(64_769, 42, 9, at + Duration::from_millis(1)),
        ] {
            assert_ne!(backend.break_marker(&here), backend.break_marker(&other));
        }
        Ok(())
    }

    #[test]
    fn an_abandoned_marker_expires_for_a_plain_backend_too() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (backend, observed) = stale_lock(dir.path())?;
        let marker = marker_of(&backend)?;
        fs::write(&marker, b"")?;
        set_mtime(&marker, SystemTime::now() - Duration::from_secs(3600))?;
        // The first breaker finds the marker in its way and removes it as
        // abandoned; the next attempt breaks the lock.
        assert_eq!(
            block_on(backend.break_if_unchanged(&observed))?,
            Broke::Changed
        );
        assert!(!marker.exists(), "the expired marker is removed");
        assert_eq!(
            block_on(backend.break_if_unchanged(&observed))?,
            Broke::Broken
        );
        assert_eq!(
            fs::read_dir(dir.path())?.count(),
            0,
            "nothing is left behind"
        );
        Ok(())
    }

    /// With the wall-clock rule off, a clock far ahead of the file
    /// server's must not make a live breaker's marker look abandoned (the
    /// simulator found two holders that way: seed 83132 of the default
    /// campaign). Seen for the first time, an "hour-old" marker is kept.
    #[test]
    fn without_trusted_clocks_an_old_looking_marker_is_not_expired_at_first_sight() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (backend, observed) = stale_lock(dir.path())?;
        let backend = backend.expire_break_markers_by_wall_clock(false);
        let marker = marker_of(&backend)?;
        fs::write(&marker, b"")?;
        set_mtime(&marker, SystemTime::now() - Duration::from_secs(3600))?;
        assert_eq!(
            block_on(backend.break_if_unchanged(&observed))?,
            Broke::Changed
        );
        assert!(marker.exists(), "the marker is left to its breaker");
        assert!(backend.path().exists(), "the stale lock is not broken");
        fs::remove_file(&marker)?;
        Ok(())
    }

    #[test]
    fn a_young_marker_is_left_to_its_breaker() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (backend, observed) = stale_lock(dir.path())?;
        let marker = marker_of(&backend)?;
        fs::write(&marker, b"")?;
        for _ in 0..3 {
            assert_eq!(
                block_on(backend.break_if_unchanged(&observed))?,
                Broke::Changed
            );
        }
        assert!(marker.exists() && backend.path().exists());
        Ok(())
    }

    /// Real time is what is tested here: a marker whose stamp lies in the
    /// future (a file server whose clock is ahead) is never expired by the
    /// wall clock, only by being seen unchanged for the expiry. 50 ms of
    /// expiry against a 300 ms wait leaves a wide margin on a loaded host.
    #[test]
    fn a_marker_stamped_in_the_future_expires_by_watching() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (backend, observed) = stale_lock(dir.path())?;
        let backend = backend.expire_break_markers_after(Duration::from_millis(50));
        let marker = marker_of(&backend)?;
        fs::write(&marker, b"")?;
        set_mtime(&marker, SystemTime::now() + Duration::from_secs(3600))?;
        assert_eq!(
            block_on(backend.break_if_unchanged(&observed))?,
            Broke::Changed
        );
        assert!(marker.exists(), "first seen now: not yet expired");
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            block_on(backend.break_if_unchanged(&observed))?,
            Broke::Changed
        );
        assert!(!marker.exists(), "unchanged for longer than the expiry");
        assert_eq!(
            block_on(backend.break_if_unchanged(&observed))?,
            Broke::Broken
        );
        Ok(())
    }

    #[test]
    fn an_expired_marker_is_swapped_out_never_leaving_the_name_empty() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (backend, _) = stale_lock(dir.path())?;
        let marker = marker_of(&backend)?;
        fs::write(&marker, b"")?;
        let expired = block_on(RealFs.lstat(&marker))?;
        assert!(block_on(backend.replace_expired_marker(&marker, &expired)));
        assert!(!marker.exists());
        assert_eq!(fs::read_dir(dir.path())?.count(), 1, "the lock alone");

        // The expired marker was removed meanwhile, and a live breaker's
        // marker took the name: it is swapped back, untouched.
        fs::write(&marker, b"")?;
        let live = block_on(RealFs.lstat(&marker))?;
        assert!(!block_on(backend.replace_expired_marker(&marker, &expired)));
        let after = block_on(RealFs.lstat(&marker))?;
        assert_eq!((after.ino, after.mtime), (live.ino, live.mtime));
        assert_eq!(
            fs::read_dir(dir.path())?.count(),
            2,
            "the lock and the marker"
        );
        Ok(())
    }

    #[test]
    fn removing_an_expired_marker_never_removes_a_newer_one() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (backend, _) = stale_lock(dir.path())?;
        let marker = marker_of(&backend)?;
        fs::write(&marker, b"")?;
        let newer = block_on(RealFs.lstat(&marker))?;
        // Judged expired as some other inode: the one there now is newer.
        let removed = block_on(backend.remove_marker_if_same(&marker, newer.ino + 1, newer.mtime));
        assert!(!removed);
        let after = block_on(RealFs.lstat(&marker))?;
        assert_eq!((after.ino, after.mtime), (newer.ino, newer.mtime));
        let names: Vec<_> = fs::read_dir(dir.path())?.collect::<Result<_, _>>()?;
        assert_eq!(names.len(), 2, "the lock and the marker, no trash");
        Ok(())
    }
}
