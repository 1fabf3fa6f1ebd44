//! The heldlock lock-file protocol.
//!
//! `FsBackend` implements `heldlock_core`'s `LockBackend` on a POSIX file
//! system: `O_EXCL` create, rename to trash, `link` to restore. It runs over a
//! small `Vfs` trait so the same protocol code runs on the real file system and
//! on the simulated one of `heldlock-sim`. (Arrives with the held-lock work.)
#![warn(missing_docs)]
