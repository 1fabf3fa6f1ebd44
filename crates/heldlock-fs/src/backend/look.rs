//! Looking at a path: what stands there, whether it is a lock, and whether
//! it is still ours.

use std::io;
use std::path::Path;
use std::sync::OnceLock;
use std::time::UNIX_EPOCH;

use heldlock_core::{BackendError, Holder, Identity, LockRecord, Observed, OwnerId, Step};

use super::{FsBackend, Held, MAX_READ, read_sized};
use crate::record;
use crate::vfs::{FileKind, Meta, Vfs, VfsFile};

/// The fixed part of an identity's bytes, before the content read.
const IDENTITY_HEADER: usize = 1 + 8 + 8 + 12 + 8 + 1 + 1;

impl<V: Vfs> FsBackend<V> {
    /// Looks at whatever `path` names, without following a symbolic link,
    /// blocking on a FIFO or reading more than [`MAX_READ`] bytes.
    pub(super) async fn look(&self, path: &Path, at: Place) -> Result<Option<Look>, LookError> {
        self.look_probing(path, at, false).await
    }

    /// [`look`](Self::look), and with `probe`, also whether a kernel lock
    /// is held on a file whose record names a host (the only records whose
    /// holders take one and whose contenders may trust it): the probe costs
    /// two system calls, so it is made only where a waiter judges a lock.
    pub(super) async fn look_probing(
        &self,
        path: &Path,
        at: Place,
        probe: bool,
    ) -> Result<Option<Look>, LookError> {
        let meta = match self.vfs.lstat(path).await {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(at.fail(Op::Lstat, e)),
        };
        if meta.kind != FileKind::File {
            // A symbolic link, directory, FIFO, socket or device is never
            // opened (opening a device can have effects): its inode alone
            // identifies it.
            return Ok(Some(Look::unread(meta)));
        }
        let file = match self.vfs.open_read(path).await {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if is_denied(&e) => {
                tracing::debug!(
                    path = %path.display(),
                    "may not read the file: honoured while present, never broken"
                );
                return Ok(Some(Look::unread(meta)));
            }
            Err(open_err) => {
                // The file may have been swapped for a symbolic link or a
                // socket since the lstat (ELOOP, ENXIO): look once more.
                return match self.vfs.lstat(path).await {
                    Ok(meta) if meta.kind != FileKind::File => Ok(Some(Look::unread(meta))),
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
            return Ok(Some(Look::unread(meta)));
        }
        let content = match file.read_capped(MAX_READ).await {
            Ok(content) => content,
            Err(e) if is_denied(&e) => return Ok(Some(Look::unread(meta))),
            Err(e) => return Err(at.fail(Op::Read, e)),
        };
        let mut look = Look::read(meta, content);
        // An error of the probe (a file system without `flock`) only means
        // no proof of life: the heartbeat and the pid still tell.
        look.kernel_held = probe
            && self.kernel_locks
            && look.decoded().is_some_and(|r| r.field("host").is_some())
            && file.kernel_held().await.unwrap_or(false);
        Ok(Some(look))
    }

    /// Whether the lock path still names `held`'s inode and that inode's
    /// record still names `owner`.
    pub(super) async fn still_ours(
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
        Ok(Self::names_owner(held, &content, owner))
    }

    /// The reference's ownership rule, for [`Safeguards::inode_ownership`]
    /// off: the record read through the path names `owner`.
    #[cfg(feature = "safeguard-switches")]
    pub(super) async fn still_ours_by_content(
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
    pub(super) async fn touch_by_path(
        &self,
        step: Step,
        now: std::time::SystemTime,
    ) -> Result<(), BackendError> {
        let file = self
            .vfs
            .open_read(&self.path)
            .await
            .map_err(|e| self.io(step, "open the lock file to stamp it", e))?;
        file.set_mtime(now)
            .await
            .map_err(|e| self.io(step, "set the lock file's modification time", e))
    }

    /// Looks at `path` like [`look`](Self::look), but when it names `held`'s
    /// inode reads the content through `held`'s descriptor instead of opening
    /// the file by name.
    pub(super) async fn look_through(
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
            Ok(content) => Ok(Some(Look::read(meta, content))),
            Err(e) => Err(Place::Trash.fail(Op::Read, e)),
        }
    }
}

/// What the look at a path found.
#[derive(Debug)]
pub(super) struct Look {
    pub(super) meta: Meta,
    /// The first [`MAX_READ`] bytes; `None` when not read (not a regular
    /// file, or not readable).
    pub(super) content: Option<Vec<u8>>,
    /// Whether another open file holds a kernel lock on it (only probed
    /// where a waiter judges the lock; see [`FsBackend::look_probing`]).
    pub(super) kernel_held: bool,
    /// The content decoded as a record, once: an inspect asks for it to
    /// probe, to classify and to describe the holder.
    decoded: OnceLock<Option<LockRecord>>,
}

/// What a thing at the lock path is, as far as breaking it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Nature {
    /// Provably a lock ([`record::classify`]): breakable once stale.
    Lock,
    /// A regular file we may not read: honoured while present, never
    /// broken, since it cannot be told from somebody's data.
    Unreadable,
    /// Not a lock: refused at once.
    NotALock,
}

impl Look {
    pub(super) fn unread(meta: Meta) -> Self {
        Look {
            meta,
            content: None,
            kernel_held: false,
            decoded: OnceLock::new(),
        }
    }

    fn read(meta: Meta, content: Vec<u8>) -> Self {
        Look {
            content: Some(content),
            ..Look::unread(meta)
        }
    }

    /// The content as a record, if it decodes as one ([`record::decode`]).
    fn decoded(&self) -> Option<&LockRecord> {
        self.decoded
            .get_or_init(|| self.content.as_deref().and_then(record::decode))
            .as_ref()
    }

    pub(super) fn nature(&self) -> Nature {
        let is_lock = |content: &[u8]| match self.decoded() {
            Some(decoded) => record::is_lock_record(decoded),
            None => record::classify_undecoded(content).is_lock(),
        };
        match (&self.content, self.meta.kind) {
            // A record is one short line: a file larger than the read cap
            // cannot be one, whatever its first bytes say.
            (Some(_), _) if self.meta.len > MAX_READ as u64 => Nature::NotALock,
            (Some(content), _) if is_lock(content) => Nature::Lock,
            (Some(_), _) => Nature::NotALock,
            (None, FileKind::File) => Nature::Unreadable,
            (None, _) => Nature::NotALock,
        }
    }

    /// Which exact lock this is: the inode (with its birth time, where known,
    /// since inode numbers are reused), its kind and size, and what was read
    /// from it. The stamp (mtime) is kept apart, as `refreshed_at`.
    pub(super) fn identity(&self) -> Identity {
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

    pub(super) fn record(&self) -> Option<LockRecord> {
        self.decoded().cloned()
    }

    pub(super) fn holder(&self) -> Holder {
        if let Some(record) = self.record() {
            return Holder::Record(record);
        }
        let summary = match (&self.content, self.meta.kind) {
            (Some(content), _) if content.is_empty() => "<an empty lock file>".to_owned(),
            (Some(content), _) => record::summary(content),
            (None, FileKind::File) => "<an unreadable file>".to_owned(),
            (None, kind) => format!("<{}>", kind_name(kind)),
        };
        Holder::Foreign { summary }
    }

    pub(super) fn observed(&self) -> Observed {
        Observed::new(self.holder(), self.identity(), self.meta.mtime)
            .with_breakable(self.nature() == Nature::Lock)
            .with_kernel_held(self.kernel_held)
    }
}

/// Which name a look is at, for error messages.
#[derive(Clone, Copy)]
pub(super) enum Place {
    Lock,
    Trash,
}

#[derive(Clone, Copy)]
pub(super) enum Op {
    Open,
    Fstat,
    Read,
    Lstat,
}

impl Place {
    pub(super) fn fail(self, op: Op, source: io::Error) -> LookError {
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

pub(super) struct LookError {
    pub(super) action: &'static str,
    pub(super) source: io::Error,
}

/// A file kind in words, for messages.
pub(super) fn kind_name(kind: FileKind) -> &'static str {
    match kind {
        FileKind::File => "a regular file",
        FileKind::Dir => "a directory",
        FileKind::Symlink => "a symbolic link",
        FileKind::Other => "a FIFO, socket or device",
    }
}

pub(super) fn is_denied(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::PermissionDenied
}

/// Whether `e` says the path names nothing (any more): missing, or a
/// parent that is not a directory.
pub(super) fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}
