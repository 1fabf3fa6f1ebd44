//! [`FsBackend`]: the lock-file protocol behind [`LockBackend`].

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use heldlock_core::{
    BackendError, Broke, Created, Holder, Identity, Inspection, LockBackend, LockRecord, Observed,
    OwnerId, Refreshed, Released, Step,
};

use crate::error::FsError;
use crate::record;
use crate::vfs::{FileKind, Meta, RealFs, Vfs, VfsFile};

/// The most bytes of a lock file the backend ever reads. A record is one
/// short line; anything longer is foreign, and a huge file planted at the
/// lock path must not cost more than this.
pub const MAX_READ: usize = 4096;

/// The fixed part of an identity's bytes, before the content read.
const IDENTITY_HEADER: usize = 1 + 8 + 8 + 12 + 8 + 1 + 1;

/// The longest trash suffix: `.releasing.` plus a 32-digit UUID.
const TRASH_SUFFIX_MAX: usize = ".releasing.".len() + 32;

/// The usual `NAME_MAX` of POSIX file systems.
const NAME_MAX: usize = 255;

/// Test-only switches, one per safeguard of the protocol, so that a
/// simulator can show that each one is needed: with a safeguard off, it must
/// find a schedule that breaks an invariant.
///
/// Only with the `safeguard-switches` feature (off by default); without it
/// the backend has no switches and always runs every safeguard. The default
/// value turns every safeguard on, which is exactly the normal protocol.
/// Never turn one off outside a test: each one guards a live holder's lock.
#[cfg(feature = "safeguard-switches")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Safeguards {
    /// `release` checks that the lock is still ours (our inode at the path,
    /// our owner in its record) before it moves anything. Off: it moves
    /// whatever is at the path and relies on the check after the rename.
    pub release_precheck: bool,
    /// `break_if_unchanged` looks at the lock again and compares its identity
    /// and stamp with the observation before the rename. Off: it renames at
    /// once.
    pub reverify_before_break: bool,
    /// How a lock moved to trash by mistake is put back.
    pub restore: Restore,
    /// Ownership (for `refresh`, the heartbeat and the release pre-check) is
    /// our inode at the path and our owner in its record, and `refresh`
    /// stamps through our descriptor. Off: the reference's rule, the record
    /// read through the path names our owner, and the stamp is set through
    /// the path.
    pub inode_ownership: bool,
    /// After the rename, `break_if_unchanged` checks that what it moved is
    /// still the observed lock (identity and stamp) before unlinking it. Off:
    /// it unlinks whatever it moved.
    pub recheck_after_rename: bool,
    /// `break_if_unchanged` holds an `O_EXCL` break marker named after the
    /// observed instance from its last look to its unlink, so two breakers
    /// never act on one stale lock at once. Off: the reference's protocol,
    /// with its check-then-rename race.
    pub break_marker: bool,
}

#[cfg(feature = "safeguard-switches")]
impl Default for Safeguards {
    fn default() -> Self {
        Safeguards {
            release_precheck: true,
            reverify_before_break: true,
            restore: Restore::Link,
            inode_ownership: true,
            recheck_after_rename: true,
            break_marker: true,
        }
    }
}

/// How [`FsBackend`] puts back a lock it moved to trash by mistake; see
/// [`Safeguards::restore`].
#[cfg(feature = "safeguard-switches")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restore {
    /// `link(trash, path)`, which never replaces a lock created meanwhile
    /// (the protocol).
    Link,
    /// `rename(trash, path)`, which replaces whatever was created meanwhile.
    RenameBack,
    /// No restore: the trash file is unlinked.
    Unlink,
}

/// A lock held by one owner: the descriptor [`FsBackend::try_create`] opened
/// and the inode it names.
#[derive(Debug)]
struct Held<F> {
    file: Arc<F>,
    dev: u64,
    ino: u64,
}

impl<F> Clone for Held<F> {
    fn clone(&self) -> Self {
        Held {
            file: Arc::clone(&self.file),
            dev: self.dev,
            ino: self.ino,
        }
    }
}

/// The POSIX lock-file protocol for one lock path, as a [`LockBackend`].
///
/// * `try_create` creates the file with `O_CREAT | O_EXCL` (making missing
///   parent directories), writes the [record](crate::record), sets the
///   file's mtime (the lock's stamp) to the record's `acquired_at`, and keeps
///   the descriptor open.
/// * `inspect` never opens anything but a regular file: a symbolic link,
///   FIFO, socket or device at the lock path is a foreign lock identified by
///   its inode (`lstat`); a directory is [`BackendError::NotALock`].
/// * ownership (for `refresh` and `release`) is two facts: the path names
///   the inode this backend created for the owner, and that inode's record
///   still names the owner.
/// * `break_if_unchanged` and `release` move the file to a unique trash name
///   beside it, verify what they moved, and either unlink it or put it back
///   with `link` (which never replaces a newer lock). No trash is left
///   behind on any path that completes.
/// * a symbolic link at the lock path or a trash path is never followed.
///
/// Every step is one sequence of system calls with no await point that
/// waits on anything but the [`Vfs`], so on [`RealFs`] a step is never
/// dropped half-way.
pub struct FsBackend<V: Vfs = RealFs> {
    path: PathBuf,
    dir: PathBuf,
    file_name: OsString,
    vfs: V,
    sync_writes: bool,
    held: Mutex<HashMap<OwnerId, Held<V::File>>>,
    /// Trash older than this is abandoned (its mover died mid-step) and is
    /// swept; `None`: never sweep.
    trash_max_age: Option<Duration>,
    /// Whether the trash was swept since the last successful break.
    swept: AtomicBool,
    #[cfg(feature = "safeguard-switches")]
    safeguards: Safeguards,
}

impl FsBackend<RealFs> {
    /// A backend for the lock file at `path` on the real file system.
    ///
    /// # Errors
    ///
    /// [`FsError`] if `path` cannot name a lock file: it is empty, ends in
    /// `/`, `.` or `..`, contains a NUL byte, or its file name leaves no room
    /// for the trash names the protocol puts beside it.
    pub fn new(path: impl Into<PathBuf>) -> Result<Self, FsError> {
        Self::with_vfs(path, RealFs)
    }
}

impl<V: Vfs> FsBackend<V> {
    /// A backend for the lock file at `path` on the file system `vfs`.
    ///
    /// # Errors
    ///
    /// As [`FsBackend::new`].
    pub fn with_vfs(path: impl Into<PathBuf>, vfs: V) -> Result<Self, FsError> {
        let path = path.into();
        let bytes = path.as_os_str().as_bytes();
        if bytes.is_empty() {
            return Err(FsError::EmptyPath);
        }
        if bytes.contains(&0) {
            return Err(FsError::NulInPath { path });
        }
        // Judged on the raw bytes: `Path` would quietly drop a trailing `.`.
        let last = bytes.rsplit(|&b| b == b'/').next().unwrap_or_default();
        if matches!(last, b"" | b"." | b"..") {
            return Err(FsError::NoFileName { path });
        }
        let max = NAME_MAX - TRASH_SUFFIX_MAX;
        if last.len() > max {
            let len = last.len();
            return Err(FsError::FileNameTooLong { path, len, max });
        }
        let file_name = OsString::from(std::ffi::OsStr::from_bytes(last));
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(FsBackend {
            path,
            dir,
            file_name,
            vfs,
            sync_writes: false,
            held: Mutex::new(HashMap::new()),
            trash_max_age: None,
            swept: AtomicBool::new(false),
            #[cfg(feature = "safeguard-switches")]
            safeguards: Safeguards::default(),
        })
    }

    /// Sweeps this lock's abandoned trash: the `<name>.breaking.<id>` and
    /// `<name>.releasing.<id>` files that a process killed between its
    /// rename to trash and its unlink left behind, once their modification
    /// time is older than `age` (give the lock's `stale`: a process paused
    /// that long in the middle of a step is outside the lease model anyway).
    ///
    /// The sweep runs after the first successful create of this backend and
    /// again after each successful break, so it costs one directory listing
    /// now and then, never one per acquisition. Off by default; `FileLock`
    /// turns it on. Only regular files are removed, never followed links or
    /// directories.
    #[must_use]
    pub fn sweep_trash_older_than(mut self, age: Duration) -> Self {
        self.trash_max_age = Some(age);
        self
    }

    /// Whether `try_create` flushes the record to stable storage (`fsync`)
    /// before reporting the lock created. Off by default: a lock only
    /// matters while its holder runs, and a crash that loses the record
    /// leaves an empty file that goes stale like any other.
    #[must_use]
    pub fn sync_writes(mut self, sync: bool) -> Self {
        self.sync_writes = sync;
        self
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file system the backend runs on.
    pub fn vfs(&self) -> &V {
        &self.vfs
    }

    /// Turns single safeguards off, for a simulator to show that each one
    /// is needed. Test-only; see [`Safeguards`].
    #[cfg(feature = "safeguard-switches")]
    #[must_use]
    pub fn with_safeguards(mut self, safeguards: Safeguards) -> Self {
        self.safeguards = safeguards;
        self
    }

    /// The safeguards in force ([`Safeguards::default`] unless changed).
    #[cfg(feature = "safeguard-switches")]
    pub fn safeguards(&self) -> Safeguards {
        self.safeguards
    }

    fn held(&self) -> MutexGuard<'_, HashMap<OwnerId, Held<V::File>>> {
        // The map is only ever inserted into or removed from, so a panic
        // elsewhere while it was locked cannot have left it inconsistent.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn io(&self, step: Step, action: &'static str, source: io::Error) -> BackendError {
        BackendError::Io {
            step,
            resource: self.resource_name(),
            action,
            source,
        }
    }

    fn resource_name(&self) -> String {
        self.path.display().to_string()
    }

    /// A fresh trash name beside the lock. Unguessable, so that no other
    /// contender can plant anything (a symbolic link, a lock) at it.
    fn trash_path(&self, purpose: &str) -> PathBuf {
        let mut name = self.file_name.clone();
        // Unguessable without a system call: see `OwnerId::random`.
        let id = OwnerId::random().as_str().replace('-', "");
        name.push(format!(".{purpose}.{id}"));
        self.dir.join(name)
    }

    /// Looks at whatever `path` names, without following a symbolic link,
    /// blocking on a FIFO or reading more than [`MAX_READ`] bytes.
    async fn look(&self, path: &Path, at: Place) -> Result<Option<Look>, LookError> {
        let meta = match self.vfs.lstat(path).await {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(at.fail(Op::Lstat, e)),
        };
        if meta.kind != FileKind::File {
            // A symbolic link, directory, FIFO, socket or device is never
            // opened (opening a device can have effects): its inode alone
            // identifies it.
            return Ok(Some(Look {
                meta,
                content: None,
            }));
        }
        let file = match self.vfs.open_read(path).await {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if is_denied(&e) => {
                return Ok(Some(Look {
                    meta,
                    content: None,
                }));
            }
            Err(open_err) => {
                // The file may have been swapped for a symbolic link or a
                // socket since the lstat (ELOOP, ENXIO): look once more.
                return match self.vfs.lstat(path).await {
                    Ok(meta) if meta.kind != FileKind::File => Ok(Some(Look {
                        meta,
                        content: None,
                    })),
                    Ok(_) => Err(at.fail(Op::Open, open_err)),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(at.fail(Op::Lstat, e)),
                };
            }
        };
        // From here on, the inode actually opened: identity and content must
        // describe the same file even if the name was swapped meanwhile.
        let meta = file.fstat().await.map_err(|e| at.fail(Op::Fstat, e))?;
        if meta.kind != FileKind::File {
            return Ok(Some(Look {
                meta,
                content: None,
            }));
        }
        match file.read_capped(MAX_READ).await {
            Ok(content) => Ok(Some(Look {
                meta,
                content: Some(content),
            })),
            Err(e) if is_denied(&e) => Ok(Some(Look {
                meta,
                content: None,
            })),
            Err(e) => Err(at.fail(Op::Read, e)),
        }
    }

    /// Whether the lock path still names `held`'s inode and that inode's
    /// record still names `owner`.
    async fn still_ours(
        &self,
        step: Step,
        held: &Held<V::File>,
        owner: &OwnerId,
    ) -> Result<bool, BackendError> {
        #[cfg(feature = "safeguard-switches")]
        if !self.safeguards.inode_ownership {
            return self.still_ours_by_content(step, owner).await;
        }
        let meta = match self.vfs.lstat(&self.path).await {
            Ok(meta) => meta,
            Err(e) if is_gone(&e) => return Ok(false),
            Err(e) => return Err(self.io(step, "stat the lock file", e)),
        };
        if (meta.dev, meta.ino) != (held.dev, held.ino) {
            return Ok(false);
        }
        // Read through our own descriptor: the path could be swapped between
        // the stat above and an open, the descriptor cannot.
        let content = read_sized(held.file.as_ref(), &meta)
            .await
            .map_err(|e| self.io(step, "read the lock file", e))?;
        Ok(record::names_owner(&content, owner))
    }

    /// The reference's ownership rule, for [`Safeguards::inode_ownership`]
    /// off: the record read through the path names `owner`.
    #[cfg(feature = "safeguard-switches")]
    async fn still_ours_by_content(
        &self,
        step: Step,
        owner: &OwnerId,
    ) -> Result<bool, BackendError> {
        match self.look(&self.path, Place::Lock).await {
            Ok(look) => Ok(look
                .and_then(|look| look.record())
                .is_some_and(|r| &r.owner == owner)),
            Err(e) => Err(self.io(step, e.action, e.source)),
        }
    }

    /// Stamps whatever the path names, for [`Safeguards::inode_ownership`]
    /// off (the reference's `utimes(path)`).
    #[cfg(feature = "safeguard-switches")]
    async fn touch_by_path(&self, step: Step, now: SystemTime) -> Result<(), BackendError> {
        let file = self
            .vfs
            .open_read(&self.path)
            .await
            .map_err(|e| self.io(step, "open the lock file to stamp it", e))?;
        file.set_mtime(now)
            .await
            .map_err(|e| self.io(step, "set the lock file's modification time", e))
    }

    /// Moves whatever the lock path names to a fresh trash name, then keeps
    /// it out (unlinking the trash) if `is_target` says it is the lock we
    /// meant to remove, or puts it back otherwise.
    ///
    /// `ours`, when the caller holds the lock it means to remove, lets the
    /// moved file be identified through the descriptor kept since it was
    /// created: a holder whose umask left it no read permission on its own
    /// lock file could not re-open it by name.
    async fn claim(
        &self,
        step: Step,
        purpose: &str,
        ours: Option<&Held<V::File>>,
        is_target: impl FnOnce(&Look) -> bool + Send,
    ) -> Result<Claim, BackendError> {
        let trash = self.trash_path(purpose);
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
                self.restore(step, &trash, FileKind::File).await?;
                return Err(self.io(step, e.action, e.source));
            }
        };
        if is_target(&moved) {
            self.vfs
                .unlink(&trash)
                .await
                .map_err(|e| self.io(step, "unlink the trash file", e))?;
            return Ok(Claim::Removed);
        }
        self.restore(step, &trash, moved.meta.kind).await
    }

    /// Looks at `path` like [`look`](Self::look), but when it names `held`'s
    /// inode reads the content through `held`'s descriptor instead of opening
    /// the file by name.
    async fn look_through(
        &self,
        path: &Path,
        held: &Held<V::File>,
    ) -> Result<Option<Look>, LookError> {
        let meta = match self.vfs.lstat(path).await {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Place::Trash.fail(Op::Lstat, e)),
        };
        if meta.kind != FileKind::File || (meta.dev, meta.ino) != (held.dev, held.ino) {
            return self.look(path, Place::Trash).await;
        }
        match read_sized(held.file.as_ref(), &meta).await {
            Ok(content) => Ok(Some(Look {
                meta,
                content: Some(content),
            })),
            Err(e) => Err(Place::Trash.fail(Op::Read, e)),
        }
    }

    /// Puts a lock that was moved to `trash` by mistake back at the lock
    /// path, never replacing whatever may have been created there since.
    async fn restore(
        &self,
        step: Step,
        trash: &Path,
        kind: FileKind,
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
                self.vfs
                    .unlink(trash)
                    .await
                    .map_err(|e| self.io(step, "unlink the trash file after restoring", e))?;
                Ok(Claim::Restored)
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
    async fn restore_unsafely(
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
    async fn remove_unstatted(&self, file: V::File, record: &LockRecord) {
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

    async fn remove_half_made(&self, held: &Held<V::File>) {
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

    /// Writes the record into a new lock file and stamps it with the
    /// record's `acquired_at`, so that the stamp comes from the same clock as
    /// every later refresh (the core's), not from the file system's.
    async fn write_record(
        &self,
        step: Step,
        file: &V::File,
        record: &LockRecord,
    ) -> Result<(), BackendError> {
        let text = record::encode(record);
        file.write_all(text.as_bytes())
            .await
            .map_err(|e| self.io(step, "write the lock record", e))?;
        file.set_mtime(record.acquired_at)
            .await
            .map_err(|e| self.io(step, "stamp the lock file", e))?;
        if self.sync_writes {
            file.sync()
                .await
                .map_err(|e| self.io(step, "fsync the lock file", e))?;
        }
        Ok(())
    }

    async fn do_try_create(&self, record: &LockRecord) -> Result<Created, BackendError> {
        let step = Step::Create;
        let file = match self.vfs.create_new(&self.path).await {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(Created::Exists),
            Err(e) if is_gone(&e) => {
                self.vfs
                    .create_dir_all(&self.dir)
                    .await
                    .map_err(|e| self.io(Step::Prepare, "create the parent directories", e))?;
                match self.vfs.create_new(&self.path).await {
                    Ok(file) => file,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        return Ok(Created::Exists);
                    }
                    Err(e) => return Err(self.io(step, "create the lock file", e)),
                }
            }
            Err(e) => return Err(self.io(step, "create the lock file", e)),
        };
        let meta = match file.fstat().await {
            Ok(meta) => meta,
            // A transient failure: once more before giving up on the inode.
            Err(_) => match file.fstat().await {
                Ok(meta) => meta,
                Err(e) => {
                    self.remove_unstatted(file, record).await;
                    return Err(self.io(step, "stat the new lock file", e));
                }
            },
        };
        let held = Held {
            file: Arc::new(file),
            dev: meta.dev,
            ino: meta.ino,
        };
        let written = self.write_record(step, &held.file, record).await;
        if let Err(error) = written {
            self.remove_half_made(&held).await;
            return Err(error);
        }
        self.held().insert(record.owner.clone(), held);
        self.sweep_if_due().await;
        Ok(Created::Created)
    }

    async fn do_inspect(&self) -> Result<Inspection, BackendError> {
        match self.look(&self.path, Place::Lock).await {
            Ok(None) => Ok(Inspection::Absent),
            Ok(Some(look)) if look.meta.kind == FileKind::Dir => Err(BackendError::NotALock {
                step: Step::Inspect,
                resource: self.resource_name(),
                what: "a directory".to_owned(),
            }),
            Ok(Some(look)) => Ok(Inspection::Present(look.observed())),
            Err(e) => Err(self.io(Step::Inspect, e.action, e.source)),
        }
    }

    async fn do_refresh(
        &self,
        owner: &OwnerId,
        now: SystemTime,
    ) -> Result<Refreshed, BackendError> {
        let step = Step::Refresh;
        let Some(held) = self.held().get(owner).cloned() else {
            return Ok(Refreshed::Lost);
        };
        if !self.still_ours(step, &held, owner).await? {
            return Ok(Refreshed::Lost);
        }
        // Through the descriptor: touching by path could stamp a replacement
        // that slipped in since the check.
        #[cfg(feature = "safeguard-switches")]
        if !self.safeguards.inode_ownership {
            self.touch_by_path(step, now).await?;
            return Ok(if self.still_ours(step, &held, owner).await? {
                Refreshed::Refreshed
            } else {
                Refreshed::Lost
            });
        }
        held.file
            .set_mtime(now)
            .await
            .map_err(|e| self.io(step, "set the lock file's modification time", e))?;
        // A peer may have broken and replaced the lock between the check and
        // the touch; then we touched only our orphaned inode.
        if !self.still_ours(step, &held, owner).await? {
            return Ok(Refreshed::Lost);
        }
        Ok(Refreshed::Refreshed)
    }

    async fn do_break(&self, observed: &Observed) -> Result<Broke, BackendError> {
        let step = Step::Break;
        let unchanged = |look: &Look| {
            look.identity() == observed.identity && look.meta.mtime == observed.refreshed_at
        };
        #[cfg(feature = "safeguard-switches")]
        if !(self.safeguards.reverify_before_break
            && self.safeguards.recheck_after_rename
            && self.safeguards.break_marker)
        {
            return self.break_unsafely(observed).await;
        }
        match self.look(&self.path, Place::Lock).await {
            Ok(None) => return Ok(Broke::Absent),
            Ok(Some(look)) if !unchanged(&look) => return Ok(Broke::Changed),
            Ok(Some(_)) => {}
            Err(e) => return Err(self.io(step, e.action, e.source)),
        }
        // Only one breaker at a time acts on one stale instance: without
        // this, a breaker that re-verified X could rename away the fresh
        // lock of another breaker that broke X and took the lock meanwhile.
        let marker = self.break_marker(observed);
        match self.vfs.create_new(&marker).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.remove_abandoned_marker(&marker).await;
                return Ok(Broke::Changed);
            }
            Err(e) => return Err(self.io(step, "create the break marker", e)),
        }
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
                        self.swept.store(false, Ordering::Relaxed);
                        Broke::Broken
                    }
                    Claim::Restored | Claim::Displaced => Broke::Changed,
                }),
            Err(e) => Err(self.io(step, e.action, e.source)),
        };
        let _ = self.vfs.unlink(&marker).await;
        outcome
    }

    /// The name of the break marker of one stale lock instance: the same in
    /// every process (a stable hash of the observed identity and stamp), so
    /// that breakers of that instance exclude each other with `O_EXCL`.
    fn break_marker(&self, observed: &Observed) -> PathBuf {
        let stamp = observed
            .refreshed_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut bytes = observed.identity.as_bytes().to_vec();
        bytes.extend_from_slice(&stamp.to_le_bytes());
        let mut name = self.file_name.clone();
        name.push(format!(
            ".break.{:016x}{:016x}",
            record::stable_hash(record::FNV_OFFSET_BASIS, &bytes),
            record::stable_hash(0x6c62_272e_07bb_0142, &bytes)
        ));
        self.dir.join(name)
    }

    /// A break marker older than the trash age was left by a breaker that
    /// died mid-break: remove it, so that the stale lock can be broken (at
    /// the next attempt). Younger markers belong to a breaker at work.
    async fn remove_abandoned_marker(&self, marker: &Path) {
        let Some(max_age) = self.trash_max_age else {
            return;
        };
        let Ok(meta) = self.vfs.lstat(marker).await else {
            return;
        };
        let abandoned = meta.kind == FileKind::File
            && SystemTime::now()
                .duration_since(meta.mtime)
                .is_ok_and(|age| age > max_age);
        if abandoned && self.vfs.unlink(marker).await.is_ok() {
            tracing::info!(marker = %marker.display(), "removed the break marker of a breaker that died");
        }
    }

    /// Whether `name` is one of this lock's trash names (or a break marker):
    /// `<file name>.(breaking|releasing|break).<32 hex digits>`.
    fn is_our_trash(&self, name: &std::ffi::OsStr) -> bool {
        let (name, ours) = (name.as_bytes(), self.file_name.as_bytes());
        let Some(rest) = name.strip_prefix(ours).and_then(|r| r.strip_prefix(b".")) else {
            return false;
        };
        let id = rest
            .strip_prefix(b"breaking.")
            .or_else(|| rest.strip_prefix(b"releasing."))
            .or_else(|| rest.strip_prefix(b"break."));
        id.is_some_and(|id| id.len() == 32 && id.iter().all(u8::is_ascii_hexdigit))
    }

    async fn sweep_if_due(&self) {
        let Some(max_age) = self.trash_max_age else {
            return;
        };
        if self.swept.swap(true, Ordering::Relaxed) {
            return;
        }
        let dir = if self.dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            self.dir.as_path()
        };
        let Ok(names) = self.vfs.list_dir(dir).await else {
            return;
        };
        let now = SystemTime::now();
        for name in names.iter().filter(|n| self.is_our_trash(n)) {
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

    /// `do_break` with [`Safeguards::reverify_before_break`] or
    /// [`Safeguards::recheck_after_rename`] off.
    #[cfg(feature = "safeguard-switches")]
    async fn break_unsafely(&self, observed: &Observed) -> Result<Broke, BackendError> {
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

    async fn do_release(&self, owner: &OwnerId) -> Result<Released, BackendError> {
        let step = Step::Release;
        let held = self.held().get(owner).cloned();
        let outcome = self.release_held(step, held, owner).await;
        // Forget the owner once the outcome is known; after an error a retry
        // still has the descriptor to prove ownership with.
        if outcome.is_ok() {
            self.held().remove(owner);
        }
        outcome
    }

    async fn release_held(
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
                    .is_some_and(|content| record::names_owner(content, owner))
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

impl<V: Vfs> fmt::Debug for FsBackend<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FsBackend")
            .field("path", &self.path)
            .field("vfs", &self.vfs)
            .field("sync_writes", &self.sync_writes)
            .field("held", &self.held().len())
            .finish()
    }
}

#[async_trait]
impl<V: Vfs> LockBackend for FsBackend<V> {
    fn resource(&self) -> String {
        self.resource_name()
    }

    async fn try_create(&self, record: &LockRecord) -> Result<Created, BackendError> {
        self.do_try_create(record).await
    }

    async fn inspect(&self) -> Result<Inspection, BackendError> {
        self.do_inspect().await
    }

    async fn refresh(&self, owner: &OwnerId, now: SystemTime) -> Result<Refreshed, BackendError> {
        self.do_refresh(owner, now).await
    }

    async fn break_if_unchanged(&self, observed: &Observed) -> Result<Broke, BackendError> {
        self.do_break(observed).await
    }

    async fn release(&self, owner: &OwnerId) -> Result<Released, BackendError> {
        self.do_release(owner).await
    }

    /// Runs [`release`](LockBackend::release) on the calling thread when the
    /// file system's futures never wait ([`Vfs::BLOCKING_OK`], true for
    /// [`RealFs`]); `None` otherwise.
    fn release_blocking(&self, owner: &OwnerId) -> Option<Result<Released, BackendError>> {
        V::BLOCKING_OK.then(|| block_on(self.do_release(owner)))
    }

    /// On the real file system, a listener that completes when the lock's
    /// name is removed or renamed away (release and break both rename it),
    /// through inotify on its directory; `None` elsewhere or when inotify
    /// cannot watch it (waiters then poll with a backoff).
    fn listen(&self) -> Option<heldlock_core::ChangeListener> {
        if V::NOTIFIES {
            crate::queue::listen(&self.path)
        } else {
            None
        }
    }
}

/// Reads a file that `meta`, a stat of the same inode, says holds
/// `meta.len` bytes. When a read of that size brings back a whole line (every
/// record ends with its newline), that is the content, in one system call
/// instead of a second read that only finds the end (this runs twice in
/// every release). Anything else (a size that does not match what is read,
/// which a file system may report wrongly, or bytes that end mid-line) is
/// read again to the end, capped at [`MAX_READ`], as
/// [`VfsFile::read_capped`] always does.
async fn read_sized<F: VfsFile>(file: &F, meta: &Meta) -> io::Result<Vec<u8>> {
    if let Some(size) = usize::try_from(meta.len)
        .ok()
        .filter(|&size| size > 0 && size <= MAX_READ)
    {
        let content = file.read_capped(size).await?;
        if content.len() == size && content.ends_with(b"\n") {
            return Ok(content);
        }
    }
    file.read_capped(MAX_READ).await
}

/// What the look at a path found.
#[derive(Debug)]
struct Look {
    meta: Meta,
    /// The first [`MAX_READ`] bytes; `None` when not read (not a regular
    /// file, or not readable).
    content: Option<Vec<u8>>,
}

impl Look {
    /// Which exact lock this is: the inode (with its birth time, where known,
    /// since inode numbers are reused), its kind and size, and what was read
    /// from it. The stamp (mtime) is kept apart, as `refreshed_at`.
    fn identity(&self) -> Identity {
        let content = self.content.as_deref().unwrap_or_default();
        let mut bytes = Vec::with_capacity(IDENTITY_HEADER + content.len());
        bytes.push(1); // format version of these bytes
        bytes.extend_from_slice(&self.meta.dev.to_le_bytes());
        bytes.extend_from_slice(&self.meta.ino.to_le_bytes());
        let (birth_secs, birth_nanos) = match self.meta.birth.map(|t| t.duration_since(UNIX_EPOCH))
        {
            None => (u64::MAX, u32::MAX),
            Some(Ok(after)) => (after.as_secs(), after.subsec_nanos()),
            // Before 1970: kept distinct from the same offset after it.
            Some(Err(before)) => (
                before.duration().as_secs(),
                before.duration().subsec_nanos() | 1 << 31,
            ),
        };
        bytes.extend_from_slice(&birth_secs.to_le_bytes());
        bytes.extend_from_slice(&birth_nanos.to_le_bytes());
        bytes.extend_from_slice(&self.meta.len.to_le_bytes());
        bytes.push(match self.meta.kind {
            FileKind::File => 0,
            FileKind::Dir => 1,
            FileKind::Symlink => 2,
            FileKind::Other => 3,
        });
        bytes.push(u8::from(self.content.is_some()));
        bytes.extend_from_slice(content);
        Identity::new(bytes)
    }

    fn record(&self) -> Option<LockRecord> {
        self.content.as_deref().and_then(record::decode)
    }

    fn holder(&self) -> Holder {
        if let Some(record) = self.record() {
            return Holder::Record(record);
        }
        let summary = match (&self.content, self.meta.kind) {
            (Some(content), _) => record::summary(content),
            (None, FileKind::Symlink) => "<a symbolic link>".to_owned(),
            (None, FileKind::File) => "<an unreadable file>".to_owned(),
            (None, FileKind::Dir) => "<a directory>".to_owned(),
            (None, FileKind::Other) => "<a FIFO, socket or device>".to_owned(),
        };
        Holder::Foreign { summary }
    }

    fn observed(&self) -> Observed {
        Observed {
            holder: self.holder(),
            identity: self.identity(),
            refreshed_at: self.meta.mtime,
        }
    }
}

/// The outcome of [`FsBackend::claim`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Claim {
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

/// Which name a look is at, for error messages.
#[derive(Clone, Copy)]
enum Place {
    Lock,
    Trash,
}

#[derive(Clone, Copy)]
enum Op {
    Open,
    Fstat,
    Read,
    Lstat,
}

impl Place {
    fn fail(self, op: Op, source: io::Error) -> LookError {
        let action = match (self, op) {
            (Place::Lock, Op::Open) => "open the lock file",
            (Place::Lock, Op::Fstat) => "stat the open lock file",
            (Place::Lock, Op::Read) => "read the lock file",
            (Place::Lock, Op::Lstat) => "stat the lock file",
            (Place::Trash, Op::Open) => "open the trash file",
            (Place::Trash, Op::Fstat) => "stat the open trash file",
            (Place::Trash, Op::Read) => "read the trash file",
            (Place::Trash, Op::Lstat) => "stat the trash file",
        };
        LookError { action, source }
    }
}

struct LookError {
    action: &'static str,
    source: io::Error,
}

fn is_denied(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::PermissionDenied
}

/// Whether `e` says the path names nothing (any more): missing, or a
/// parent that is not a directory.
fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// Wakes a thread parked in [`block_on`].
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Drives `future` to completion on this thread.
///
/// Only used with a [`Vfs`] whose futures are always ready
/// ([`Vfs::BLOCKING_OK`]), where it returns after the first poll; it parks
/// between polls so that it would also be correct (if slow) for a future
/// that waits and wakes.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        thread::park();
    }
}
