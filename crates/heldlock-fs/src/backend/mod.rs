//! [`FsBackend`]: the lock-file protocol behind [`LockBackend`].

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use heldlock_core::{
    BackendError, Broke, Created, Inspection, LockBackend, LockRecord, Observed, OwnerId,
    Refreshed, Released, Step,
};

use crate::error::FsError;
use crate::record;
use crate::vfs::{FileKind, Meta, RealFs, Vfs, VfsFile};

mod breaking;
mod claim;
mod look;
#[cfg(feature = "safeguard-switches")]
mod safeguards;
mod settings;
mod sweep;

pub use breaking::DEFAULT_MARKER_EXPIRY;
use breaking::SeenMarker;
use look::{Look, Nature, Place, is_gone, kind_name};
#[cfg(feature = "safeguard-switches")]
pub use safeguards::{Restore, Safeguards};

/// The most bytes of a lock file the backend ever reads. A record is one
/// short line; anything longer is not a lock, and a huge file planted at the
/// lock path must not cost more than this.
pub const MAX_READ: usize = 4096;

/// The longest trash suffix: `.releasing.` plus a 32-digit UUID.
const TRASH_SUFFIX_MAX: usize = ".releasing.".len() + 32;

/// The usual `NAME_MAX` of POSIX file systems.
const NAME_MAX: usize = 255;

/// A lock held by one owner: the descriptor [`FsBackend::try_create`] opened
/// and the inode it names.
#[derive(Debug)]
struct Held<F> {
    file: Arc<F>,
    dev: u64,
    ino: u64,
    /// The process that created it, as its record says: its trash names are
    /// made without asking the kernel again.
    pid: u32,
    /// The record as written: content read back equal to it names the
    /// owner (every record decodes as it was encoded), which spares the
    /// ownership checks a parse.
    written: Arc<[u8]>,
}

impl<F> Clone for Held<F> {
    fn clone(&self) -> Self {
        Held {
            file: Arc::clone(&self.file),
            dev: self.dev,
            ino: self.ino,
            pid: self.pid,
            written: Arc::clone(&self.written),
        }
    }
}

/// The POSIX lock-file protocol for one lock path, as a [`LockBackend`].
///
/// * `try_create` creates the file with `O_CREAT | O_EXCL` (making missing
///   parent directories), writes the [record](crate::record), sets the
///   file's mtime (the lock's stamp) to the record's `acquired_at`, and keeps
///   the descriptor open.
/// * `inspect` never opens anything but a regular file, and reports only a
///   provable lock ([`record::classify`]): a file that is not one is
///   [`BackendError::NotALockFile`]; a symbolic link, FIFO, socket, device
///   or directory is [`BackendError::NotALock`]; a file it may not read is
///   present but never [breakable](Observed::breakable).
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
    /// Whether this backend looked into sweeping after its first create.
    swept_once: AtomicBool,
    /// Whether a break succeeded since the last sweep: a dead holder is
    /// exactly who leaves trash.
    broke: AtomicBool,
    /// A break marker older than this was left by a breaker that died.
    marker_expiry: Duration,
    /// Whether a marker's age may be judged by our wall clock against its
    /// modification time (off where clocks are not trusted).
    marker_wall_clock: bool,
    /// Whether holders take, and waiters probe, the kernel lock.
    kernel_locks: bool,
    /// The marker this backend found in its way, and since when it has seen
    /// it unchanged (by the monotonic clock, which no host's clock skews).
    marker_seen: Mutex<Option<SeenMarker>>,
    /// Bounded waiting (see [`bounded_wait`](Self::bounded_wait)).
    bounded_wait: Option<Duration>,
    /// Where this lock's starving mark would be, found on first need.
    starving_mark: OnceLock<Option<PathBuf>>,
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

impl FsBackend<RealFs> {
    /// A new descriptor of the lock file `owner` holds, without
    /// close-on-exec, for a child process to inherit; see
    /// [`FileLock::inheritable_descriptor`](crate::FileLock::inheritable_descriptor).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::NotFound`] when `owner` holds no lock here; the
    /// `dup` error otherwise.
    pub fn inheritable_descriptor(&self, owner: &OwnerId) -> io::Result<rustix::fd::OwnedFd> {
        let held = self.held().get(owner).cloned().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "this owner holds no lock here")
        })?;
        // `dup` leaves close-on-exec off on the new descriptor.
        Ok(rustix::io::dup(rustix::fd::AsFd::as_fd(
            held.file.as_ref(),
        ))?)
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
            swept_once: AtomicBool::new(false),
            broke: AtomicBool::new(false),
            marker_expiry: DEFAULT_MARKER_EXPIRY,
            marker_wall_clock: true,
            kernel_locks: true,
            marker_seen: Mutex::new(None),
            bounded_wait: None,
            starving_mark: OnceLock::new(),
            #[cfg(feature = "safeguard-switches")]
            safeguards: Safeguards::default(),
        })
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
        self.trash_path_of(purpose, std::process::id())
    }

    /// [`trash_path`](Self::trash_path) for the process `pid`, which must be
    /// ours: the name is unique among processes by it (a child forked
    /// without `exec` draws the same numbers as its parent otherwise).
    fn trash_path_of(&self, purpose: &str, pid: u32) -> PathBuf {
        let id = trash_id(pid).to_be_bytes();
        let mut name = Vec::with_capacity(self.file_name.len() + TRASH_SUFFIX_MAX);
        name.extend_from_slice(self.file_name.as_bytes());
        name.push(b'.');
        name.extend_from_slice(purpose.as_bytes());
        name.push(b'.');
        for byte in id {
            name.push(HEX[usize::from(byte >> 4)]);
            name.push(HEX[usize::from(byte & 0xf)]);
        }
        self.dir.join(std::ffi::OsStr::from_bytes(&name))
    }

    /// Writes the record into a new lock file and stamps it with the
    /// record's `acquired_at`, so that the stamp comes from the same clock as
    /// every later refresh (the core's), not from the file system's.
    async fn write_record(
        &self,
        step: Step,
        held: &Held<V::File>,
        record: &LockRecord,
    ) -> Result<(), BackendError> {
        let file = held.file.as_ref();
        file.write_all(&held.written)
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
        // Before the record: contenders trust a kernel lock only on a file
        // whose record they can read, so none of them ever holds the shared
        // probe lock that would make this one fail. Any failure (a file
        // system without `flock`) only leaves the lock without that proof.
        if self.kernel_locks && !matches!(file.lock_exclusive().await, Ok(true)) {
            tracing::debug!(lock = %self.path.display(), "no kernel lock on the new lock file");
        }
        let held = Held {
            file: Arc::new(file),
            dev: meta.dev,
            ino: meta.ino,
            pid: record.pid,
            written: Arc::from(record::encode(record).into_bytes()),
        };
        let written = self.write_record(step, &held, record).await;
        if let Err(error) = written {
            self.remove_half_made(&held).await;
            return Err(error);
        }
        // Until the record is written the file declares nothing: a
        // contender with a shorter `stale` may break it as an empty lock
        // while we were paused, or an outside tool may have replaced it.
        // Still ours only if the path names our inode now; otherwise the
        // lock went to someone else and we never held it.
        match self.vfs.lstat(&self.path).await {
            Ok(meta) if (meta.dev, meta.ino) == (held.dev, held.ino) => {}
            Ok(_) => return Ok(Created::Exists),
            Err(e) if is_gone(&e) => return Ok(Created::Exists),
            Err(e) => {
                self.remove_half_made(&held).await;
                return Err(self.io(step, "stat the new lock file", e));
            }
        }
        self.held().insert(record.owner.clone(), held);
        self.sweep_if_due().await;
        Ok(Created::Created)
    }

    async fn do_inspect(&self) -> Result<Inspection, BackendError> {
        match self.look_probing(&self.path, Place::Lock, true).await {
            Ok(None) => Ok(Inspection::Absent),
            Ok(Some(look)) => match look.nature() {
                Nature::Lock | Nature::Unreadable => Ok(Inspection::Present(look.observed())),
                Nature::NotALock => Err(self.not_a_lock(Step::Inspect, &look)),
            },
            Err(e) => Err(self.io(Step::Inspect, e.action, e.source)),
        }
    }

    /// The error for something at the lock path that is not a lock.
    fn not_a_lock(&self, step: Step, look: &Look) -> BackendError {
        let resource = self.resource_name();
        match (&look.content, look.meta.kind) {
            (Some(content), _) => BackendError::NotALockFile {
                step,
                resource,
                size: look.meta.len,
                excerpt: record::summary(content),
            },
            (None, kind) => BackendError::NotALock {
                step,
                resource,
                what: kind_name(kind).to_owned(),
            },
        }
    }

    /// Looks at whatever stands at the lock path, lock or not, for a caller
    /// about to remove it by force (`heldlock break --force`): a file that
    /// is not a lock, a symbolic link (never followed), a FIFO, socket or
    /// device is [`Inspection::Present`] with
    /// [`breakable`](Observed::breakable) `false`, where
    /// [`inspect`](LockBackend::inspect) refuses it. A directory is still
    /// [`BackendError::NotALock`].
    ///
    /// # Errors
    ///
    /// As [`inspect`](LockBackend::inspect), but for the non-locks above.
    pub async fn inspect_anything(&self) -> Result<Inspection, BackendError> {
        match self.look(&self.path, Place::Lock).await {
            Ok(None) => Ok(Inspection::Absent),
            Ok(Some(look)) if look.meta.kind == FileKind::Dir => {
                Err(self.not_a_lock(Step::Inspect, &look))
            }
            Ok(Some(look)) => {
                let lock = look.nature() == Nature::Lock;
                Ok(Inspection::Present(look.observed().with_breakable(lock)))
            }
            Err(e) => Err(self.io(Step::Inspect, e.action, e.source)),
        }
    }

    /// Removes what [`inspect_anything`](Self::inspect_anything) observed,
    /// lock or not, if it is still exactly that (the same safe steps as
    /// [`break_if_unchanged`](LockBackend::break_if_unchanged)). This
    /// destroys a file that may be somebody's data: only for a person who
    /// asked for it by name.
    ///
    /// # Errors
    ///
    /// As [`break_if_unchanged`](LockBackend::break_if_unchanged).
    pub async fn break_anything(&self, observed: &Observed) -> Result<Broke, BackendError> {
        self.do_break(observed, true).await
    }

    /// Whether `content`, read from `held`'s inode, is a record naming
    /// `owner`: what [`record::names_owner`] says, without a parse when it
    /// is exactly the record written.
    fn names_owner(held: &Held<V::File>, content: &[u8], owner: &OwnerId) -> bool {
        if content == &*held.written {
            debug_assert!(record::names_owner(content, owner));
            return true;
        }
        record::names_owner(content, owner)
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
        self.do_break(observed, false).await
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
            crate::queue::listen(&self.path, self.bounded_wait)
        } else {
            None
        }
    }

    /// With [`bounded_wait`](FsBackend::bounded_wait) on the real file
    /// system: when the leader of this host's waiters for the lock has
    /// marked its queue starving, a listener that keeps this process in the
    /// queue behind it (one `access` per acquisition finds that there is no
    /// mark; the mark's place is found once per backend).
    fn wait_behind_older(&self) -> Option<heldlock_core::ChangeListener> {
        let bound = self.bounded_wait?;
        if !V::NOTIFIES {
            return None;
        }
        let mark = self
            .starving_mark
            .get_or_init(|| crate::queue::starving_mark(&self.path))
            .as_deref()?;
        crate::queue::wait_behind_older(&self.path, mark, bound)
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

const HEX: &[u8; 16] = b"0123456789abcdef";

/// 128 unguessable bits for a trash name: SipHash, keyed once per process
/// from the operating system's randomness, over a counter and the process
/// id (as `OwnerId::random` draws its bits, without its UUID formatting and
/// without a system call).
fn trash_id(pid: u32) -> u128 {
    static KEYS: LazyLock<(RandomState, RandomState)> =
        LazyLock::new(|| (RandomState::new(), RandomState::new()));
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let input = (COUNTER.fetch_add(1, Ordering::Relaxed), pid);
    (u128::from(KEYS.0.hash_one(input)) << 64) | u128::from(KEYS.1.hash_one(input))
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
