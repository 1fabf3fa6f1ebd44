//! The *protocol floors*: the bare system calls of one create and one
//! release, in the order they are issued, with no logic, no runtime and no
//! checks. Benchmarks compare heldlock with them; every benchmark uses these
//! definitions so that the floors cannot drift apart, and [`Floor`] must
//! follow `heldlock_fs::FsBackend` whenever the protocol's steps change.
//!
//! [`Floor`], heldlock's own protocol (13 calls):
//!
//! * create (6): `open(O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC|O_RDWR)`, `fstat`,
//!   `flock(LOCK_EX|LOCK_NB)` (the proof of life), `write` the record,
//!   `futimens`, `lstat` the path (still our inode: a creator whose empty
//!   file was broken never held the lock);
//! * release (7): `lstat` the path and `pread` through the kept descriptor
//!   (the ownership pre-check), `rename` to trash, `lstat` the trash and
//!   `pread` through the descriptor (our own lock is recognised through it),
//!   `unlink` the trash, `close`.
//!
//! [`ReferenceFloor`], the TypeScript reference's protocol (7 calls), each
//! step as its one cheapest system call:
//!
//! * create (2): `open(O_CREAT|O_EXCL|O_WRONLY)` (`"wx"`), `write`;
//! * release (5): read the record (`pread` through the descriptor kept since
//!   the create: the reference re-opens by name, which only costs more),
//!   `rename` to trash, read the trash (`pread` again), `unlink`, `close`.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, CWD, FlockOperation, Mode, OFlags, Timespec, Timestamps};

/// One lock path worked by heldlock's bare protocol.
#[derive(Debug)]
pub struct Floor {
    path: PathBuf,
    trash: PathBuf,
    record: Vec<u8>,
    held: Option<OwnedFd>,
}

/// The trash name beside `path` (one per process: the floors never hold
/// two locks at once).
fn trash_of(path: &Path) -> PathBuf {
    let mut trash = path.as_os_str().to_owned();
    trash.push(format!(".releasing.{:032x}", std::process::id()));
    trash.into()
}

impl Floor {
    /// The floor on `path`, writing `record` (give it heldlock's length).
    pub fn new(path: &Path, record: Vec<u8>) -> Self {
        Floor {
            path: path.to_path_buf(),
            trash: trash_of(path),
            record,
            held: None,
        }
    }

    /// One create attempt: `Ok(false)` when a lock exists.
    ///
    /// # Errors
    ///
    /// Any other failure of the system calls.
    pub fn try_acquire(&mut self) -> io::Result<bool> {
        let flags =
            OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDWR;
        let fd = match rustix::fs::open(&self.path, flags, Mode::from_raw_mode(0o644)) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::EXIST) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        rustix::fs::fstat(&fd)?;
        rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive)?;
        rustix::io::write(&fd, &self.record)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let now = Timespec {
            tv_sec: i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: now.subsec_nanos().into(),
        };
        let stamp = Timestamps {
            last_access: now,
            last_modification: now,
        };
        rustix::fs::futimens(&fd, &stamp)?;
        rustix::fs::statat(CWD, &self.path, AtFlags::SYMLINK_NOFOLLOW)?;
        self.held = Some(fd);
        Ok(true)
    }

    /// Releases the lock taken by [`try_acquire`](Self::try_acquire).
    ///
    /// # Errors
    ///
    /// Releasing without a held lock, or a failed system call.
    pub fn release(&mut self) -> io::Result<()> {
        let fd = self
            .held
            .take()
            .ok_or_else(|| io::Error::other("release without a held lock"))?;
        let mut buf = [0u8; 4096];
        rustix::fs::statat(CWD, &self.path, AtFlags::SYMLINK_NOFOLLOW)?;
        rustix::io::pread(&fd, &mut buf, 0)?;
        rustix::fs::renameat(CWD, &self.path, CWD, &self.trash)?;
        rustix::fs::statat(CWD, &self.trash, AtFlags::SYMLINK_NOFOLLOW)?;
        rustix::io::pread(&fd, &mut buf, 0)?;
        rustix::fs::unlinkat(CWD, &self.trash, AtFlags::empty())?;
        drop(fd);
        Ok(())
    }
}

/// One lock path worked by the reference's bare protocol (7 calls a pair).
#[derive(Debug)]
pub struct ReferenceFloor {
    path: PathBuf,
    trash: PathBuf,
    record: Vec<u8>,
    held: Option<OwnedFd>,
}

impl ReferenceFloor {
    /// The reference floor on `path`, writing `record`.
    pub fn new(path: &Path, record: Vec<u8>) -> Self {
        ReferenceFloor {
            path: path.to_path_buf(),
            trash: trash_of(path),
            record,
            held: None,
        }
    }

    /// One create attempt: `Ok(false)` when a lock exists.
    ///
    /// # Errors
    ///
    /// Any other failure of the system calls.
    pub fn try_acquire(&mut self) -> io::Result<bool> {
        let flags = OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC | OFlags::RDWR;
        let fd = match rustix::fs::open(&self.path, flags, Mode::from_raw_mode(0o644)) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::EXIST) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        rustix::io::write(&fd, &self.record)?;
        self.held = Some(fd);
        Ok(true)
    }

    /// Releases the lock taken by [`try_acquire`](Self::try_acquire).
    ///
    /// # Errors
    ///
    /// Releasing without a held lock, or a failed system call.
    pub fn release(&mut self) -> io::Result<()> {
        let fd = self
            .held
            .take()
            .ok_or_else(|| io::Error::other("release without a held lock"))?;
        let mut buf = [0u8; 4096];
        rustix::io::pread(&fd, &mut buf, 0)?;
        rustix::fs::renameat(CWD, &self.path, CWD, &self.trash)?;
        rustix::io::pread(&fd, &mut buf, 0)?;
        rustix::fs::unlinkat(CWD, &self.trash, AtFlags::empty())?;
        drop(fd);
        Ok(())
    }
}

/// A fresh directory for a benchmark: in `$HELDLOCK_BENCH_IN` when set (to
/// measure on that directory's file system), else on tmpfs (`/dev/shm`)
/// when there is one, else in the system temporary directory.
///
/// # Errors
///
/// When no temporary directory can be made.
pub fn bench_dir() -> io::Result<tempfile::TempDir> {
    if let Some(dir) = std::env::var_os("HELDLOCK_BENCH_IN") {
        return tempfile::tempdir_in(dir);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(shm)
    {
        return Ok(dir);
    }
    tempfile::tempdir()
}

/// Creates `count` empty files named `other-<n>` in `dir`, as fast as one
/// `open` + `close` each allows (a million take a few seconds on tmpfs), for
/// benchmarks of a lock whose directory holds many other entries.
///
/// # Errors
///
/// The first failed create.
pub fn fill_dir(dir: &Path, count: u32) -> io::Result<()> {
    let dirfd = rustix::fs::open(dir, OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    let flags = OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC;
    let mut name = String::with_capacity(16);
    for n in 0..count {
        use std::fmt::Write as _;
        name.clear();
        let _ = write!(name, "other-{n}");
        drop(rustix::fs::openat(
            &dirfd,
            name.as_str(),
            flags,
            Mode::from_raw_mode(0o644),
        )?);
    }
    Ok(())
}
