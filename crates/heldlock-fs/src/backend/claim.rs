//! Removing a lock: move it to trash, check what was moved, then unlink it
//! or put it back; and the release built on that.

use std::io;
use std::path::Path;

use heldlock_core::{BackendError, LockRecord, OwnerId, Released, Step};

#[cfg(feature = "safeguard-switches")]
use super::Restore;
use super::look::is_gone;
use super::look::{Look, Nature, Place};
use super::{FsBackend, Held};
use crate::record;
use crate::vfs::{FileKind, Vfs, VfsFile};

impl<V: Vfs> FsBackend<V> {
    /// Moves whatever the lock path names to a fresh trash name, then keeps
    /// it out (unlinking the trash) if `is_target` says it is the lock we
    /// meant to remove, or puts it back otherwise.
    ///
    /// `ours`, when the caller holds the lock it means to remove, lets the
    /// moved file be identified through the descriptor kept since it was
    /// created: a holder whose umask left it no read permission on its own
    /// lock file could not re-open it by name.
    pub(super) async fn claim(
        &self,
        step: Step,
        purpose: &str,
        ours: Option<&Held<V::File>>,
        is_target: impl FnOnce(&Look) -> bool + Send,
    ) -> Result<Claim, BackendError> {
        let trash = match ours {
            Some(held) => self.trash_path_of(purpose, held.pid),
            None => self.trash_path(purpose),
        };
        match self.vfs.rename(&self.path, &trash).await {
            Ok(()) => {}
            Err(e) if is_gone(&e) => return Ok(Claim::Absent),
            Err(e) => return Err(self.io(step, "rename the lock file to trash", e)),
        }
        let looked = match ours {
            Some(held) => self.look_through(&trash, held).await,
            None => self.look(&trash, Place::Trash).await,
        };
        let moved = match looked {
            Ok(Some(moved)) => moved,
            // Nobody else can know the trash name; if it vanished anyway
            // there is nothing left to keep or restore.
            Ok(None) => return Ok(Claim::Absent),
            Err(e) => {
                // We cannot tell what we moved: put it back, it is the only
                // move that cannot harm its holder.
                self.restore(step, &trash, FileKind::File, false).await?;
                return Err(self.io(step, e.action, e.source));
            }
        };
        if is_target(&moved) {
            // Gone already: another process's sweep judged the trash by its
            // modification time, which a stale lock's is, and removed it
            // between our rename and this unlink. The lock is removed.
            match self.vfs.unlink(&trash).await {
                Ok(()) => {}
                Err(e) if is_gone(&e) => {}
                Err(e) => return Err(self.io(step, "unlink the trash file", e)),
            }
            return Ok(Claim::Removed);
        }
        let lock = moved.nature() == Nature::Lock;
        self.restore(step, &trash, moved.meta.kind, lock).await
    }

    /// Puts a lock that was moved to `trash` by mistake back at the lock
    /// path, never replacing whatever may have been created there since.
    ///
    /// `lock` says whether what was moved is provably a lock: only a lock is
    /// removed when another lock took the path meanwhile. Anything else
    /// (somebody's file moved onto the lock path between our look and our
    /// rename, or something we could not look at) is kept under a name of
    /// its own beside the lock, which no sweep removes, and the step fails
    /// naming it.
    pub(super) async fn restore(
        &self,
        step: Step,
        trash: &Path,
        kind: FileKind,
        lock: bool,
    ) -> Result<Claim, BackendError> {
        if kind == FileKind::Dir {
            // Directories cannot be hard-linked; `rename` can only replace
            // an empty directory (never a file, so never a lock). If even
            // that fails, the directory stays in trash: it is no lock, and
            // deleting somebody's directory is not ours to do.
            return match self.vfs.rename(trash, &self.path).await {
                Ok(()) => Ok(Claim::Restored),
                Err(e) => Err(self.io(step, "move a directory back from trash", e)),
            };
        }
        #[cfg(feature = "safeguard-switches")]
        if let Some(claim) = self.restore_unsafely(step, trash).await? {
            return Ok(claim);
        }
        match self.vfs.link(trash, &self.path).await {
            Ok(()) => {
                // The lock is back at the path either way; a sweep may have
                // taken the trash name meanwhile.
                match self.vfs.unlink(trash).await {
                    Ok(()) => {}
                    Err(e) if is_gone(&e) => {}
                    Err(e) => {
                        return Err(self.io(step, "unlink the trash file after restoring", e));
                    }
                }
                Ok(Claim::Restored)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && !lock => {
                let kept = self.trash_path("displaced");
                let source = match self.vfs.rename(trash, &kept).await {
                    Ok(()) => io::Error::other(format!(
                        "another lock took its place; it was kept as {}",
                        kept.display()
                    )),
                    Err(e) => e,
                };
                Err(self.io(step, "put back a moved file that is not a lock", source))
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // A third contender created a lock while the one we moved was
                // in trash. Putting ours back would need to remove theirs;
                // keeping both is impossible; the moved one's holder finds it
                // lost at its next ownership check.
                tracing::warn!(
                    lock = %self.path.display(),
                    "a lock moved aside while breaking or releasing could not be put back: \
                     another lock was created in the meantime; the displaced lock was removed \
                     and its holder will find its ownership lost"
                );
                self.vfs
                    .unlink(trash)
                    .await
                    .map_err(|e| self.io(step, "unlink the displaced trash file", e))?;
                Ok(Claim::Displaced)
            }
            // Leave the trash: it is the only copy of somebody's lock.
            Err(e) => Err(self.io(step, "restore the lock from trash with link", e)),
        }
    }

    /// The alternatives to restoring with `link`, for
    /// [`Safeguards::restore`]; `None` for [`Restore::Link`].
    #[cfg(feature = "safeguard-switches")]
    pub(super) async fn restore_unsafely(
        &self,
        step: Step,
        trash: &Path,
    ) -> Result<Option<Claim>, BackendError> {
        match self.safeguards.restore {
            Restore::Link => Ok(None),
            Restore::RenameBack => match self.vfs.rename(trash, &self.path).await {
                Ok(()) => Ok(Some(Claim::Restored)),
                Err(e) => Err(self.io(step, "rename the lock back from trash", e)),
            },
            Restore::Unlink => match self.vfs.unlink(trash).await {
                Ok(()) => Ok(Some(Claim::Displaced)),
                Err(e) => Err(self.io(step, "unlink the trash file", e)),
            },
        }
    }

    /// Removes a lock file we just created but could not `fstat`, so that it
    /// does not block everyone until it goes stale. Without its inode, our
    /// record is what identifies it: it is written through the descriptor
    /// (so it lands in our inode whatever the path names by then), and the
    /// file moved to trash is removed only if it carries our fresh owner id,
    /// which no other lock can carry.
    pub(super) async fn remove_unstatted(&self, file: V::File, record: &LockRecord) {
        let written = file.write_all(record::encode(record).as_bytes()).await;
        let outcome = match written {
            Ok(()) => {
                let ours = |moved: &Look| moved.record().is_some_and(|r| r.owner == record.owner);
                self.claim(Step::Create, "releasing", None, ours).await
            }
            Err(e) => Err(self.io(Step::Create, "write the lock record", e)),
        };
        if !matches!(outcome, Ok(Claim::Removed)) {
            tracing::warn!(
                lock = %self.path.display(),
                "could not remove a just-created lock file that could not be examined; it goes stale"
            );
        }
    }

    pub(super) async fn remove_half_made(&self, held: &Held<V::File>) {
        let (dev, ino) = (held.dev, held.ino);
        let outcome = self
            .claim(Step::Create, "releasing", Some(held), |moved| {
                (moved.meta.dev, moved.meta.ino) == (dev, ino)
            })
            .await;
        if let Err(error) = outcome {
            tracing::warn!(
                lock = %self.path.display(),
                %error,
                "could not remove a half-written lock file; it will go stale"
            );
        }
    }

    pub(super) async fn do_release(&self, owner: &OwnerId) -> Result<Released, BackendError> {
        let step = Step::Release;
        let held = self.held().get(owner).cloned();
        let outcome = self.release_held(step, held, owner).await;
        // Forget the owner once the outcome is known; after an error a retry
        // still has the descriptor to prove ownership with. But not its
        // kernel lock: `Lock` never retries (the guard is consumed), and a
        // kernel lock kept for as long as this process lives would be proof
        // of life to every contender on this host. Without it, a lock whose
        // release failed goes stale, as its heartbeat has stopped.
        match &outcome {
            Ok(_) => {
                self.held().remove(owner);
            }
            Err(_) => {
                if let Some(held) = self.held().get(owner) {
                    let _ = held.file.unlock();
                }
            }
        }
        outcome
    }

    pub(super) async fn release_held(
        &self,
        step: Step,
        held: Option<Held<V::File>>,
        owner: &OwnerId,
    ) -> Result<Released, BackendError> {
        let ours = match &held {
            #[cfg(feature = "safeguard-switches")]
            Some(_) if !self.safeguards.release_precheck => true,
            Some(held) => self.still_ours(step, held, owner).await?,
            None => false,
        };
        // Pre-check: moving a lock that is not ours out of the path, even
        // briefly, would let a third contender in beside its live holder.
        let Some(held) = held.filter(|_| ours) else {
            return match self.vfs.lstat(&self.path).await {
                Ok(_) => Ok(Released::NotOurs),
                Err(e) if is_gone(&e) => Ok(Released::Absent),
                Err(e) => Err(self.io(step, "stat the lock file", e)),
            };
        };
        let is_ours = |moved: &Look| {
            (moved.meta.dev, moved.meta.ino) == (held.dev, held.ino)
                && moved
                    .content
                    .as_deref()
                    .is_some_and(|content| Self::names_owner(&held, content, owner))
        };
        Ok(
            match self.claim(step, "releasing", Some(&held), is_ours).await? {
                Claim::Absent => Released::Absent,
                Claim::Removed => Released::Released,
                Claim::Restored | Claim::Displaced => Released::NotOurs,
            },
        )
    }
}

/// The outcome of [`FsBackend::claim`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Claim {
    /// Nothing was at the lock path.
    Absent,
    /// The target was moved out and unlinked.
    Removed,
    /// Something else was moved out and put back.
    Restored,
    /// Something else was moved out, and a newer lock took the path before
    /// it could be put back; it was removed.
    Displaced,
}
