//! Hostile lock paths and contents, through the public lock API.
//!
//! The backend-level cases already in `crates/heldlock-fs/tests` (a foreign
//! summary, the refusal's excerpt, the 4 KiB identity cap, a directory's
//! `NotALock`, a symlink or FIFO refused by `inspect` and removed only by the
//! forced break, a dangling link never created through) are not repeated;
//! here each hostile thing meets the whole lock (`FileLock` on tokio,
//! async-std and smol, and the blocking API). What a crashed holder leaves
//! (an empty file, the start of a record) is honoured while fresh and broken
//! only once stale. Anything else (a file that is not a lock, a directory, a
//! symbolic link, a FIFO, socket or device) is refused at once, however old,
//! with a typed error, and left exactly as it was; a file heldlock may not
//! read is honoured and never broken. Nothing ever blocks, and nothing but
//! the lock path is ever touched. "Never touched" is checked with inotify on
//! the victim (no open, read, write, attribute change, move or delete) and a
//! snapshot of its inode, link count, size, mtime, ctime and content.
//!
//! One test binary (each costs CI link time), one module per kind of
//! hostile thing: [`contents`], [`kinds`], [`symlinks`], [`other_users`];
//! [`api`] and [`observe`] are what they share.
#![allow(clippy::unwrap_used)]

#[path = "../support/mod.rs"]
mod support;
#[path = "../vfs_faults/mod.rs"]
mod vfs_faults;

mod api;
mod observe;

mod contents;
mod kinds;
mod other_users;
mod symlinks;
