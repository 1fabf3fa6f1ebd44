//! The few file-system operations the protocol needs, as a trait.
//!
//! [`FsBackend`](crate::FsBackend) is written against [`Vfs`] so that the
//! same protocol code runs on the real file system ([`RealFs`]) and on a
//! simulated one in which every operation is a scheduling point where a
//! simulator can interleave other contenders, pause or crash. Each method is
//! one system call (or one small bounded loop of them), so that a simulation
//! interleaves at the same granularity as the kernel does.

use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::fd::OwnedFd;
use rustix::fs::{
    AtFlags, CWD, FileType, FlockOperation, Mode, OFlags, Stat, Timespec, Timestamps, flock,
};
use rustix::io::Errno;

/// A file system the lock protocol runs on.
///
/// Paths are used as given (relative paths resolve against the current
/// directory). No method follows a symbolic link in the **last** component
/// of a path; intermediate directories resolve as usual.
///
/// Errors are [`io::Error`]s whose [`kind`](io::Error::kind) (or raw OS
/// error) is what the matching POSIX call would report: the protocol tells
/// `NotFound`, `AlreadyExists` and `PermissionDenied` apart, and an
/// implementation must report those faithfully.
pub trait Vfs: Send + Sync + fmt::Debug + 'static {
    /// An open file.
    type File: VfsFile;

    /// Whether every future this file system returns completes on its first
    /// poll, so that it may be driven to completion on the calling thread
    /// without an executor (used by
    /// [`release_blocking`](heldlock_core::LockBackend::release_blocking)).
    /// `false` unless the implementation guarantees it; a simulated file
    /// system whose futures wait for a scheduler must keep it `false`.
    const BLOCKING_OK: bool = false;

    /// Whether this is the host's real file system, whose changes the
    /// kernel can report (inotify): lock waiters are then woken by a release
    /// instead of polling. `false` (the default) for simulated file systems.
    const NOTIFIES: bool = false;

    /// `mkdir -p`: creates `path` and any missing parents; succeeds if it
    /// already is a directory.
    fn create_dir_all(&self, path: &Path) -> impl Future<Output = io::Result<()>> + Send;

    /// Creates a new regular file at `path` and opens it for reading and
    /// writing: `O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_RDWR`, mode
    /// `0o644` (before the umask). Fails with `AlreadyExists` if anything,
    /// even a dangling symbolic link, is at `path`.
    fn create_new(&self, path: &Path) -> impl Future<Output = io::Result<Self::File>> + Send;

    /// Opens `path` for reading without following a symbolic link and
    /// without blocking on a FIFO or device:
    /// `O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC`. A directory may be
    /// opened; a symbolic link fails (`ELOOP` on Linux).
    fn open_read(&self, path: &Path) -> impl Future<Output = io::Result<Self::File>> + Send;

    /// The metadata of `path` itself (a symbolic link is not followed).
    fn lstat(&self, path: &Path) -> impl Future<Output = io::Result<Meta>> + Send;

    /// Atomically renames `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> impl Future<Output = io::Result<()>> + Send;

    /// Makes `to` a new hard link to the inode `from` names (a symbolic link
    /// itself, not its target). Never replaces anything: fails with
    /// `AlreadyExists` if `to` exists.
    fn link(&self, from: &Path, to: &Path) -> impl Future<Output = io::Result<()>> + Send;

    /// Removes the name `path` (not a directory).
    fn unlink(&self, path: &Path) -> impl Future<Output = io::Result<()>> + Send;

    /// Atomically swaps what `a` and `b` name (`renameat2(RENAME_EXCHANGE)`
    /// on Linux); both must exist, and neither name is ever empty. Fails
    /// with [`io::ErrorKind::Unsupported`] where the operating system or
    /// the file system cannot (the default).
    fn exchange(&self, a: &Path, b: &Path) -> impl Future<Output = io::Result<()>> + Send {
        let _ = (a, b);
        async { Err(io::ErrorKind::Unsupported.into()) }
    }

    /// This host's wall clock, against which the ages of break markers are
    /// judged (a simulated file system gives each simulated host its own).
    fn wall_clock(&self) -> SystemTime {
        SystemTime::now()
    }

    /// A monotonic clock, for how long a break marker was seen unchanged.
    fn monotonic(&self) -> Instant {
        Instant::now()
    }

    /// The names in directory `dir`, for sweeping abandoned trash. The
    /// default lists nothing, which turns sweeping off.
    fn list_dir(&self, dir: &Path) -> impl Future<Output = io::Result<Vec<OsString>>> + Send {
        let _ = dir;
        async { Ok(Vec::new()) }
    }
}

/// An open file of a [`Vfs`]: it keeps naming the same inode whatever
/// happens to the path it was opened by.
pub trait VfsFile: Send + Sync + fmt::Debug + 'static {
    /// Writes all of `bytes` at offset 0 onwards.
    fn write_all(&self, bytes: &[u8]) -> impl Future<Output = io::Result<()>> + Send;

    /// Reads from offset 0 until the end of the file or until `max` bytes,
    /// whichever comes first; never more than `max`.
    fn read_capped(&self, max: usize) -> impl Future<Output = io::Result<Vec<u8>>> + Send;

    /// The metadata of the open inode.
    fn fstat(&self) -> impl Future<Output = io::Result<Meta>> + Send;

    /// Sets the inode's modification time (its access time is left alone).
    fn set_mtime(&self, mtime: SystemTime) -> impl Future<Output = io::Result<()>> + Send;

    /// Flushes the file's data and metadata to stable storage (`fsync`).
    fn sync(&self) -> impl Future<Output = io::Result<()>> + Send;

    /// Takes an exclusive kernel lock on the open file (`flock(LOCK_EX |
    /// LOCK_NB)`) that lasts while any descriptor of this open file
    /// description stays open, in this process or a child that inherited
    /// it: `Ok(true)` when taken, `Ok(false)` when another holds one.
    /// The default takes none (`Ok(false)`): a file system without kernel
    /// locks offers no proof of life beyond the heartbeat.
    fn lock_exclusive(&self) -> impl Future<Output = io::Result<bool>> + Send {
        async { Ok(false) }
    }

    /// Lets go of the kernel lock [`lock_exclusive`](Self::lock_exclusive)
    /// took, keeping the file open. Synchronous: it is one system call that
    /// never waits. The default does nothing, matching `lock_exclusive`.
    fn unlock(&self) -> io::Result<()> {
        Ok(())
    }

    /// Whether some other open file description holds an exclusive kernel
    /// lock on this inode (`flock(LOCK_SH | LOCK_NB)` fails with
    /// `EWOULDBLOCK`; a shared lock it does get is dropped at once). The
    /// default says `false`, matching [`lock_exclusive`](Self::lock_exclusive).
    fn kernel_held(&self) -> impl Future<Output = io::Result<bool>> + Send {
        async { Ok(false) }
    }
}

/// What kind of file a name refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A FIFO, socket or device.
    Other,
}

/// The metadata the protocol looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// The device holding the inode.
    pub dev: u64,
    /// The inode number; with `dev`, names one inode while it exists.
    pub ino: u64,
    /// What kind of file it is.
    pub kind: FileKind,
    /// The size in bytes.
    pub len: u64,
    /// The last modification time: the lock's refresh stamp.
    pub mtime: SystemTime,
    /// The number of hard links to the inode.
    pub nlink: u64,
    /// When the inode was created, where the file system reports it
    /// (`statx` on Linux); `None` elsewhere. Unlike the inode number, which
    /// the file system may hand to the next file created after this one is
    /// removed, it tells one lock instance from the next; `rename` keeps it.
    pub birth: Option<SystemTime>,
}

/// The real file system, through POSIX system calls.
///
/// Every operation runs **inline**, on the thread that first polls its
/// future, and completes in that poll (nothing happens before it): they are
/// short system calls on a local file system, cheaper than a hand-off to a
/// blocking thread pool.
/// (The backend opens only what `lstat` showed to be a regular file, and
/// `O_NONBLOCK` keeps a FIFO swapped in meanwhile from blocking the open.) On a network file system that can stall, drive the backend from a
/// blocking-capable context.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealFs;

impl RealFs {
    /// The real file system.
    pub fn new() -> Self {
        RealFs
    }
}

/// An open file of [`RealFs`].
#[derive(Debug)]
pub struct RealFile {
    fd: OwnedFd,
}

impl Vfs for RealFs {
    type File = RealFile;

    const BLOCKING_OK: bool = true;
    const NOTIFIES: bool = true;

    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    async fn create_new(&self, path: &Path) -> io::Result<RealFile> {
        let flags =
            OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDWR;
        open(path, flags, Mode::from_raw_mode(0o644))
    }

    async fn open_read(&self, path: &Path) -> io::Result<RealFile> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        open(path, flags, Mode::empty())
    }

    async fn lstat(&self, path: &Path) -> io::Result<Meta> {
        lstat_meta(path)
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        retry(|| rustix::fs::rename(from, to))
    }

    async fn link(&self, from: &Path, to: &Path) -> io::Result<()> {
        // `linkat` without AT_SYMLINK_FOLLOW links a symbolic link itself;
        // plain `link` may follow it on some systems.
        retry(|| rustix::fs::linkat(CWD, from, CWD, to, AtFlags::empty()))
    }

    async fn unlink(&self, path: &Path) -> io::Result<()> {
        retry(|| rustix::fs::unlink(path))
    }

    async fn exchange(&self, a: &Path, b: &Path) -> io::Result<()> {
        exchange(a, b)
    }

    async fn list_dir(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        std::fs::read_dir(dir)?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect()
    }
}

impl VfsFile for RealFile {
    async fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        write_all_at_zero(&self.fd, bytes)
    }

    async fn read_capped(&self, max: usize) -> io::Result<Vec<u8>> {
        read_capped(&self.fd, max)
    }

    async fn fstat(&self) -> io::Result<Meta> {
        fstat_meta(&self.fd)
    }

    async fn set_mtime(&self, mtime: SystemTime) -> io::Result<()> {
        set_mtime(&self.fd, mtime)
    }

    async fn sync(&self) -> io::Result<()> {
        retry(|| rustix::fs::fsync(&self.fd))
    }

    async fn lock_exclusive(&self) -> io::Result<bool> {
        match retry(|| flock(&self.fd, FlockOperation::NonBlockingLockExclusive)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn unlock(&self) -> io::Result<()> {
        retry(|| flock(&self.fd, FlockOperation::Unlock))
    }

    async fn kernel_held(&self) -> io::Result<bool> {
        match retry(|| flock(&self.fd, FlockOperation::NonBlockingLockShared)) {
            Ok(()) => {
                // Held for no longer than this call: a shared lock that
                // lingered would block the next holder's exclusive one.
                retry(|| flock(&self.fd, FlockOperation::Unlock))?;
                Ok(false)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(true),
            Err(e) => Err(e),
        }
    }
}

impl rustix::fd::AsFd for RealFile {
    fn as_fd(&self) -> rustix::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn lstat_meta(path: &Path) -> io::Result<Meta> {
    match statx_meta(CWD, path, AtFlags::SYMLINK_NOFOLLOW) {
        // Linux before 4.11, or a sandbox that hides `statx`.
        Err(Errno::NOSYS) => retry(|| rustix::fs::lstat(path)).map(|st| meta(&st)),
        other => other.map_err(io::Error::from),
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn fstat_meta(fd: &OwnedFd) -> io::Result<Meta> {
    match statx_meta(fd, "", AtFlags::EMPTY_PATH) {
        Err(Errno::NOSYS) => retry(|| rustix::fs::fstat(fd)).map(|st| meta(&st)),
        other => other.map_err(io::Error::from),
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn lstat_meta(path: &Path) -> io::Result<Meta> {
    retry(|| rustix::fs::lstat(path)).map(|st| meta(&st))
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn fstat_meta(fd: &OwnedFd) -> io::Result<Meta> {
    retry(|| rustix::fs::fstat(fd)).map(|st| meta(&st))
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn statx_meta<P: rustix::path::Arg + Copy>(
    dirfd: impl rustix::fd::AsFd,
    path: P,
    flags: AtFlags,
) -> rustix::io::Result<Meta> {
    use rustix::fs::{StatxFlags, statx};
    let mask = StatxFlags::BASIC_STATS | StatxFlags::BTIME;
    let stx = loop {
        match statx(&dirfd, path, flags, mask) {
            Err(Errno::INTR) => continue,
            other => break other?,
        }
    };
    let has = |flag: StatxFlags| StatxFlags::from_bits_retain(stx.stx_mask).contains(flag);
    Ok(Meta {
        dev: rustix::fs::makedev(stx.stx_dev_major, stx.stx_dev_minor),
        ino: stx.stx_ino,
        kind: kind(u32::from(stx.stx_mode)),
        len: stx.stx_size,
        mtime: system_time(stx.stx_mtime.tv_sec, i64::from(stx.stx_mtime.tv_nsec)),
        nlink: u64::from(stx.stx_nlink),
        birth: has(StatxFlags::BTIME)
            .then(|| system_time(stx.stx_btime.tv_sec, i64::from(stx.stx_btime.tv_nsec))),
    })
}

/// Runs a system call again while a signal interrupts it.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    match retry(|| rustix::fs::renameat_with(CWD, a, CWD, b, rustix::fs::RenameFlags::EXCHANGE)) {
        // An old kernel, or a file system that cannot (NFS, many FUSE ones).
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(code) if code == Errno::INVAL.raw_os_error()
                    || code == Errno::NOSYS.raw_os_error()
                    || code == Errno::OPNOTSUPP.raw_os_error()
            ) =>
        {
            Err(io::ErrorKind::Unsupported.into())
        }
        other => other,
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn exchange(_: &Path, _: &Path) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

fn retry<T>(mut call: impl FnMut() -> rustix::io::Result<T>) -> io::Result<T> {
    loop {
        match call() {
            Err(Errno::INTR) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

fn open(path: &Path, flags: OFlags, mode: Mode) -> io::Result<RealFile> {
    retry(|| rustix::fs::open(path, flags, mode)).map(|fd| RealFile { fd })
}

fn write_all_at_zero(fd: &OwnedFd, bytes: &[u8]) -> io::Result<()> {
    let mut written = 0;
    while written < bytes.len() {
        let n = retry(|| rustix::io::pwrite(fd, &bytes[written..], offset(written)))?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        written += n;
    }
    Ok(())
}

fn read_capped(fd: &OwnedFd, max: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; max];
    let mut filled = 0;
    while filled < max {
        let n = retry(|| rustix::io::pread(fd, &mut buf[filled..], offset(filled)))?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    buf.truncate(filled);
    Ok(buf)
}

fn offset(at: usize) -> u64 {
    // usize is at most 64 bits on every target rustix supports.
    u64::try_from(at).unwrap_or(u64::MAX)
}

fn set_mtime(fd: &OwnedFd, mtime: SystemTime) -> io::Result<()> {
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        last_modification: timespec(mtime)?,
    };
    retry(|| rustix::fs::futimens(fd, &times))
}

// `tv_nsec` is an `i64` on some targets and a C `long` on others.
#[allow(clippy::unnecessary_fallible_conversions)]
fn timespec(time: SystemTime) -> io::Result<Timespec> {
    let out_of_range = || io::Error::new(io::ErrorKind::InvalidInput, "time out of range");
    let (secs, nanos) = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => (
            i64::try_from(after.as_secs()).map_err(|_| out_of_range())?,
            after.subsec_nanos(),
        ),
        Err(before) => {
            let before = before.duration();
            let secs = i64::try_from(before.as_secs()).map_err(|_| out_of_range())?;
            match before.subsec_nanos() {
                0 => (-secs, 0),
                n => (-secs - 1, 1_000_000_000 - n),
            }
        }
    };
    Ok(Timespec {
        tv_sec: secs,
        tv_nsec: nanos.try_into().map_err(|_| out_of_range())?,
    })
}

// `Stat`'s field types differ between targets (and between rustix's libc
// and raw-Linux backends); `as` is the one conversion that compiles on all.
#[allow(clippy::unnecessary_cast, trivial_numeric_casts)]
fn meta(st: &Stat) -> Meta {
    Meta {
        dev: st.st_dev as u64,
        ino: st.st_ino as u64,
        kind: kind(st.st_mode as _),
        len: u64::try_from(st.st_size as i64).unwrap_or(0),
        mtime: system_time(st.st_mtime as i64, st.st_mtime_nsec as i64),
        nlink: st.st_nlink as u64,
        birth: None,
    }
}

fn kind(mode: rustix::fs::RawMode) -> FileKind {
    match FileType::from_raw_mode(mode) {
        FileType::RegularFile => FileKind::File,
        FileType::Directory => FileKind::Dir,
        FileType::Symlink => FileKind::Symlink,
        _ => FileKind::Other,
    }
}

fn system_time(secs: i64, nanos: i64) -> SystemTime {
    let nanos = u32::try_from(nanos.clamp(0, 999_999_999)).unwrap_or(0);
    let time = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(secs.unsigned_abs(), nanos))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))
            .and_then(|t| t.checked_add(Duration::from_nanos(u64::from(nanos))))
    };
    time.unwrap_or(UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::useless_conversion)] // `tv_nsec` is not `i64` everywhere
    fn timespec_round_trips_through_system_time() {
        for time in [
            UNIX_EPOCH,
            UNIX_EPOCH + Duration::new(1_795_863_440, 123_456_789),
            UNIX_EPOCH - Duration::new(5, 250_000_000),
            UNIX_EPOCH - Duration::from_secs(7),
        ] {
            let ts = timespec(time).map_err(|e| e.to_string());
            let back = ts.map(|ts| system_time(ts.tv_sec, ts.tv_nsec.into()));
            assert_eq!(back, Ok(time));
        }
    }

    #[test]
    fn read_capped_stops_at_the_cap_and_at_the_end() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("f");
        let fs = RealFs;
        let file = futures::executor::block_on(fs.create_new(&path))?;
        futures::executor::block_on(file.write_all(&[7; 10_000]))?;
        let head = futures::executor::block_on(file.read_capped(4096))?;
        assert_eq!(head.len(), 4096);
        let all = futures::executor::block_on(file.read_capped(1 << 20))?;
        assert_eq!(all.len(), 10_000);
        assert!(all.iter().all(|&b| b == 7));
        Ok(())
    }

    #[test]
    fn create_new_refuses_an_existing_name_even_a_dangling_link() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(dir.path().join("missing"), &link)?;
        let err = futures::executor::block_on(RealFs.create_new(&link)).map(|_| ());
        assert_eq!(err.map_err(|e| e.kind()), Err(io::ErrorKind::AlreadyExists));
        assert!(!dir.path().join("missing").exists());
        Ok(())
    }

    #[test]
    fn set_mtime_sets_exactly_the_given_time() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("f");
        let file = futures::executor::block_on(RealFs.create_new(&path))?;
        let when = UNIX_EPOCH + Duration::new(1_700_000_000, 5_000);
        futures::executor::block_on(file.set_mtime(when))?;
        let meta = futures::executor::block_on(RealFs.lstat(&path))?;
        assert_eq!(meta.mtime, when);
        assert_eq!(meta.kind, FileKind::File);
        assert_eq!(meta.nlink, 1);
        Ok(())
    }
}
