//! The *protocol floor*: the bare system calls of one `FsBackend` create and
//! release, in the order the backend issues them, with no logic, no runtime
//! and no checks. Benchmarks compare heldlock with it; both benchmarks use
//! this one definition so that their floors cannot drift apart, and it must
//! follow `heldlock_fs::FsBackend` whenever the protocol's steps change.
//!
//! * create (4): `open(O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC|O_RDWR)`, `fstat`,
//!   `write` the record, `futimens`;
//! * release (7): `lstat` the path and `pread` through the kept descriptor
//!   (the ownership pre-check), `rename` to trash, `lstat` the trash and
//!   `pread` through the descriptor (our own lock is recognised through it),
//!   `unlink` the trash, `close`.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, CWD, Mode, OFlags, Timespec, Timestamps};

/// One lock path worked by the bare protocol.
#[derive(Debug)]
pub struct Floor {
    path: PathBuf,
    trash: PathBuf,
    record: Vec<u8>,
    held: Option<OwnedFd>,
}

impl Floor {
    /// The floor on `path`, writing `record` (give it heldlock's length).
    pub fn new(path: &Path, record: Vec<u8>) -> Self {
        let mut trash = path.as_os_str().to_owned();
        trash.push(format!(".releasing.{:032x}", std::process::id()));
        Floor {
            path: path.to_path_buf(),
            trash: trash.into(),
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

/// A fresh directory for a benchmark on tmpfs (`/dev/shm`) when there is
/// one, else in the system temporary directory.
///
/// # Errors
///
/// When no temporary directory can be made.
pub fn bench_dir() -> io::Result<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(shm)
    {
        return Ok(dir);
    }
    tempfile::tempdir()
}
