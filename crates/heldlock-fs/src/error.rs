//! Errors of building an [`FsBackend`](crate::FsBackend).
//!
//! Failures while running the protocol are not here: they are
//! [`heldlock_core::BackendError`]s (`Io { step, resource, action, source }`,
//! or `NotALock` for a directory at the lock path), since the core handles
//! them for every backend alike.

use std::path::PathBuf;

/// A lock path that cannot name a lock file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    /// The path is empty.
    #[error("the lock path is empty; give the path of a lock file, e.g. \"state/db.lock\"")]
    EmptyPath,
    /// The path ends in `/`, `.` or `..`, or is `/`: it names a directory,
    /// not a file.
    #[error(
        "the lock path {} names a directory, not a file; add a file name, e.g. {}",
        path.display(),
        path.join("db.lock").display()
    )]
    NoFileName {
        /// The path given.
        path: PathBuf,
    },
    /// The path contains a NUL byte, which no POSIX path can.
    #[error("the lock path {path:?} contains a NUL byte; remove it")]
    NulInPath {
        /// The path given.
        path: PathBuf,
    },
    /// The file name is so long that the protocol's trash names beside it
    /// (the name plus a 43-byte suffix) would exceed the usual 255-byte limit.
    #[error(
        "the file name of the lock path {} is {len} bytes long; use a name of at most {max} bytes",
        path.display()
    )]
    FileNameTooLong {
        /// The path given.
        path: PathBuf,
        /// The length of its file name, in bytes.
        len: usize,
        /// The longest file name accepted, in bytes.
        max: usize,
    },
}

impl From<FsError> for heldlock_core::Error {
    fn from(error: FsError) -> Self {
        let resource = match &error {
            FsError::EmptyPath => String::new(),
            FsError::NoFileName { path }
            | FsError::NulInPath { path }
            | FsError::FileNameTooLong { path, .. } => path.display().to_string(),
        };
        heldlock_core::Error::InvalidResource {
            resource,
            reason: error.to_string(),
        }
    }
}
