//! The heldlock lock-file protocol: a held cross-process lock as a file.
//!
//! [`FsBackend`] implements [`heldlock_core::LockBackend`] for one lock path
//! on a POSIX file system, and [`FileLock`] puts it under the core's policy
//! (waiting, stale breaking, heartbeats, release on drop) for any runtime.
//! Most programs use `FileLock` through the `heldlock` facade or a runtime
//! adapter (`heldlock_tokio::FileLock`); use this crate directly to drive the
//! protocol steps yourself or to run them over another [`Vfs`].
//!
//! ```
//! use std::time::SystemTime;
//!
//! use heldlock_core::{Created, Inspection, LockBackend, LockRecord, Released};
//! use heldlock_fs::FsBackend;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # futures::executor::block_on(async {
//! let dir = tempfile::tempdir()?;
//! let backend = FsBackend::new(dir.path().join("state/db.lock"))?;
//!
//! let record = LockRecord::for_this_process(SystemTime::now());
//! assert_eq!(backend.try_create(&record).await?, Created::Created);
//! assert_eq!(backend.try_create(&record).await?, Created::Exists);
//!
//! let Inspection::Present(observed) = backend.inspect().await? else {
//!     panic!("the lock should be there");
//! };
//! let holder = observed.holder.record().map(|r| &r.owner);
//! assert_eq!(holder, Some(&record.owner));
//!
//! assert_eq!(backend.release(&record.owner).await?, Released::Released);
//! assert_eq!(backend.inspect().await?, Inspection::Absent);
//! # Ok(())
//! # })
//! # }
//! ```
//!
//! # The protocol
//!
//! * **record**: one line, `<pid> <owner> <RFC 3339 UTC time>` and optional
//!   `key=value` fields (see [`record`]). Only a provable lock is ever
//!   broken: an empty file, a record, or the start of one (a crashed
//!   write, [`record::classify`]); anything else at the lock path is an
//!   error at once and is never touched. Reads are capped at [`MAX_READ`]
//!   bytes.
//! * **create**: `mkdir -p` the parent, `open(O_CREAT | O_EXCL | O_NOFOLLOW)`,
//!   take an exclusive `flock` (proof of life, which a command run under
//!   the lock inherits), write the record, stamp the mtime with the
//!   record's `acquired_at`,
//!   `fsync` if [asked](FsBackend::sync_writes), keep the descriptor. A
//!   half-written file is removed again.
//! * **inspect**: `lstat`, then (regular files only) open, `fstat` and read.
//!   Identity = device, inode, birth time where the file system reports it
//!   (inode numbers are reused), size and content; stamp = mtime.
//! * **ownership**: the path names the inode we created *and* that inode's
//!   record names our owner. `refresh` checks both, stamps the inode through
//!   its descriptor (`futimens`) and checks both again, so a replacement is
//!   never kept fresh.
//! * **break and release**: rename to an unguessable trash name beside the
//!   lock, verify the moved inode, then `unlink` it or put it back with
//!   `link`, which never replaces a newer lock. No trash is left behind.
//! * a symbolic link at the lock path is not a lock: never followed, never
//!   removed, refused at once.
//!
//! A process of the reference TypeScript implementation and a heldlock
//! process contending on one path exclude each other: both create with
//! `O_EXCL`, write the same record format and move locks aside the same way.
//!
//! This crate is Unix-only. Waking waiters at a release (inotify), watching
//! a holder's exit (pidfd) and judging a same-host holder dead by its pid
//! (`/proc`) are Linux-only; elsewhere waiters poll and a lock goes by its
//! heartbeat's age (`docs/architecture.md`, "Platforms").
#![warn(missing_docs)]

mod backend;
mod error;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod fallback;
mod file_lock;
mod host;
mod netfs;
mod offload;
#[cfg(any(target_os = "linux", target_os = "android"))]
mod queue;
pub mod record;
mod throttle;
mod vfs;
#[cfg(any(target_os = "linux", target_os = "android"))]
mod watch;

#[cfg(not(any(target_os = "linux", target_os = "android")))]
use fallback::{queue, watch};

pub use backend::{DEFAULT_MARKER_EXPIRY, FsBackend, MAX_READ};
#[cfg(feature = "safeguard-switches")]
pub use backend::{Restore, Safeguards};
pub use error::FsError;
pub use file_lock::FileLock;
pub use host::LocalHost;
pub use netfs::is_network_fs;
pub use offload::{DEFAULT_DROP_WAIT, DEFAULT_IDLE_EXIT, Offload};
pub use vfs::{FileKind, Meta, RealFile, RealFs, Vfs, VfsFile};

#[cfg(test)]
mod test_support {
    use heldlock_core::ChangeListener;

    /// Whether `listener` completes within `limit`, driven on a thread of
    /// its own (a listener that never completes leaves that thread behind).
    pub(crate) fn completes_within(listener: ChangeListener, limit: std::time::Duration) -> bool {
        let (done, wait) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            futures::executor::block_on(listener);
            let _ = done.send(());
        });
        wait.recv_timeout(limit).is_ok()
    }

    /// A visible skip, as every test suite of the workspace makes one.
    pub(crate) use heldlock_testkit::skip;
}
