//! Watching what stands at a path without disturbing it: stamps set
//! without opening, snapshots of everything observable about a name, and
//! inotify events read back as "nothing opened" or "nothing changed".

use std::collections::HashMap;
use std::fs;
use std::mem::MaybeUninit;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fd::OwnedFd;
use rustix::fs::inotify::{self, ReadFlags, WatchFlags};
use rustix::fs::{AtFlags, CWD, Timespec, Timestamps};
use rustix::io::Errno;

use crate::support::ago;

/// Sets the mtime of `path` itself, whatever it is (a link, a FIFO, a
/// device), without opening it.
pub(crate) fn stamp(path: &Path, when: SystemTime) {
    let (secs, nanos) = match when.duration_since(UNIX_EPOCH) {
        Ok(d) => (i64::try_from(d.as_secs()).unwrap(), d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            assert_eq!(d.subsec_nanos(), 0, "whole seconds before 1970 only");
            (-i64::try_from(d.as_secs()).unwrap(), 0)
        }
    };
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: secs,
            tv_nsec: nanos.into(),
        },
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

pub(crate) fn minute_ago() -> SystemTime {
    ago(Duration::from_secs(60))
}

/// Everything observable about one name, without opening anything but a
/// regular file (for its content).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Snap {
    dev: u64,
    ino: u64,
    mode: u32,
    nlink: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    content: Option<Vec<u8>>,
    target: Option<PathBuf>,
}

pub(crate) fn snap(path: &Path) -> Snap {
    let m = fs::symlink_metadata(path).unwrap();
    Snap {
        dev: m.dev(),
        ino: m.ino(),
        mode: m.mode(),
        nlink: m.nlink(),
        len: m.len(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
        content: m.is_file().then(|| fs::read(path).unwrap()),
        target: m.is_symlink().then(|| fs::read_link(path).unwrap()),
    }
}

/// inotify watches on a few names; take snapshots (which read) before
/// creating it, and read its events before snapshotting again.
pub(crate) struct Watcher {
    fd: OwnedFd,
    names: HashMap<i32, PathBuf>,
}

impl Watcher {
    pub(crate) fn new(paths: &[&Path]) -> Self {
        let fd =
            inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK).unwrap();
        let names = paths
            .iter()
            .map(|p| {
                let flags = WatchFlags::ALL_EVENTS | WatchFlags::DONT_FOLLOW;
                (inotify::add_watch(&fd, *p, flags).unwrap(), p.to_path_buf())
            })
            .collect();
        Watcher { fd, names }
    }

    /// Every event so far, as (watched name, what, name inside a directory).
    pub(crate) fn events(&self) -> Vec<(PathBuf, ReadFlags, Option<String>)> {
        let mut buf = [MaybeUninit::uninit(); 8192];
        let mut reader = inotify::Reader::new(&self.fd, &mut buf);
        let mut out = Vec::new();
        loop {
            match reader.next() {
                Ok(event) => {
                    let watched = self.names.get(&event.wd()).cloned().unwrap_or_default();
                    let name = event.file_name().map(|n| n.to_string_lossy().into_owned());
                    out.push((watched, event.events(), name));
                }
                Err(Errno::AGAIN) => return out,
                Err(e) => panic!("reading inotify events: {e}"),
            }
        }
    }
}

/// What opening, reading or writing a node would show.
fn io_events() -> ReadFlags {
    ReadFlags::OPEN
        | ReadFlags::ACCESS
        | ReadFlags::MODIFY
        | ReadFlags::CLOSE_WRITE
        | ReadFlags::CLOSE_NOWRITE
}

pub(crate) fn assert_no_io(events: &[(PathBuf, ReadFlags, Option<String>)], what: &str) {
    for (path, flags, name) in events {
        assert!(
            !flags.intersects(io_events()),
            "{what} was opened, read or written: {flags:?} on {} {name:?}",
            path.display()
        );
    }
}

/// What changing a node, or the names in a directory, would show.
fn change_events() -> ReadFlags {
    ReadFlags::MODIFY
        | ReadFlags::ATTRIB
        | ReadFlags::CLOSE_WRITE
        | ReadFlags::CREATE
        | ReadFlags::DELETE
        | ReadFlags::MOVED_FROM
        | ReadFlags::MOVED_TO
        | ReadFlags::DELETE_SELF
        | ReadFlags::MOVE_SELF
}

pub(crate) fn assert_no_change(events: &[(PathBuf, ReadFlags, Option<String>)], what: &str) {
    for (path, flags, name) in events {
        assert!(
            !flags.intersects(change_events()),
            "{what} was changed, moved or removed: {flags:?} on {} {name:?}",
            path.display()
        );
    }
}

/// The names in `dir`, sorted.
pub(crate) fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

pub(crate) fn hour_ago() -> SystemTime {
    ago(Duration::from_secs(3600))
}
