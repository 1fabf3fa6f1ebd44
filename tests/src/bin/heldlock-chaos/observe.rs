//! The lock and the processes seen from outside, as the driver sees them:
//! a process's state, the pid the lock file names, and how long a killed
//! holder's lock took to be taken over.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// The state letter of `pid` in `/proc/<pid>/stat`; `None` once it is gone.
pub(super) fn process_state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.trim_start().chars().next()
}

/// The pid named by the record in the lock file, if any.
pub(super) fn lock_pid(lock: &Path) -> Option<i32> {
    let content = fs::read(lock).ok()?;
    let text = std::str::from_utf8(&content).ok()?;
    text.split(' ').next()?.parse().ok()
}

/// A lock left by a killed holder, watched until it is gone or replaced.
pub(super) struct Takeover {
    pub(super) killed_at: Instant,
    ino: u64,
    content: Vec<u8>,
    pub(super) took: Option<Duration>,
}

impl Takeover {
    /// The lock at `lock` if it names `pid` (timed from now until
    /// `killed_at` is set).
    pub(super) fn of(lock: &Path, pid: i32) -> Option<Self> {
        let meta = fs::symlink_metadata(lock).ok()?;
        let content = fs::read(lock).ok()?;
        let named = std::str::from_utf8(&content)
            .ok()
            .and_then(|t| t.split(' ').next())
            .and_then(|p| p.parse::<i32>().ok());
        (named == Some(pid)).then_some(Takeover {
            killed_at: Instant::now(),
            ino: meta.ino(),
            content,
            took: None,
        })
    }

    pub(super) fn poll(&mut self, lock: &Path, now: Instant) {
        if self.took.is_some() {
            return;
        }
        let same = fs::symlink_metadata(lock)
            .is_ok_and(|m| m.ino() == self.ino && fs::read(lock).is_ok_and(|c| c == self.content));
        if !same {
            self.took = Some(now.saturating_duration_since(self.killed_at));
        }
    }
}
