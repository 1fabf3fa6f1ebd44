//! The errors the simulated file system reports, as POSIX names them.

use std::fmt;
use std::io;

/// A POSIX error number the simulated file system can report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Errno {
    /// No such file or directory.
    ENOENT,
    /// File exists.
    EEXIST,
    /// A path component is not a directory.
    ENOTDIR,
    /// Is a directory.
    EISDIR,
    /// Directory not empty.
    ENOTEMPTY,
    /// Too many levels of symbolic links (opening a symbolic link with
    /// `O_NOFOLLOW`).
    ELOOP,
    /// Operation not permitted (a hard link to a directory).
    EPERM,
    /// Invalid argument.
    EINVAL,
    /// Input/output error (injected).
    EIO,
    /// No space left on device (injected).
    ENOSPC,
    /// Permission denied (injected).
    EACCES,
}

impl Errno {
    /// The errnos the fault plan injects.
    pub const INJECTED: [Errno; 3] = [Errno::EIO, Errno::ENOSPC, Errno::EACCES];

    /// The `io::Error` a real system call would return: its
    /// [`kind`](io::Error::kind) is what the protocol looks at.
    pub fn to_io(self) -> io::Error {
        use io::ErrorKind as K;
        let kind = match self {
            Errno::ENOENT => K::NotFound,
            Errno::EEXIST => K::AlreadyExists,
            Errno::ENOTDIR => K::NotADirectory,
            Errno::EISDIR => K::IsADirectory,
            Errno::ENOTEMPTY => K::DirectoryNotEmpty,
            Errno::EACCES | Errno::EPERM => K::PermissionDenied,
            Errno::ENOSPC => K::StorageFull,
            Errno::EINVAL => K::InvalidInput,
            Errno::ELOOP | Errno::EIO => K::Other,
        };
        io::Error::new(kind, format!("{self} (simulated)"))
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
