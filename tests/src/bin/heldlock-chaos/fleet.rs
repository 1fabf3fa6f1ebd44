//! The driver's worker processes in the library and long-pause modes:
//! starting them, stopping, resuming and killing them, and waiting for
//! them (the `--cli` mode has its own, in `cli/fleet.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use crate::config::Config;
use crate::observe::process_state;
use crate::util::{epoch_ms, ms, text, wait_for};

pub(super) struct Slot {
    pub(super) child: Child,
    pub(super) pid: i32,
    pub(super) inc: u64,
    pub(super) paused_until: Option<Instant>,
    /// When the current pause began (epoch ms).
    pub(super) paused_since: u64,
}

/// The worker processes. Dropping it kills whatever still runs.
pub(super) struct Fleet {
    pub(super) exe: PathBuf,
    dir: PathBuf,
    stale_ms: u64,
    poll_ms: u64,
    kind: &'static str,
    pub(super) slots: Vec<Slot>,
    pub(super) next_inc: u64,
    /// Incarnation and pid of every worker killed on purpose.
    pub(super) killed: BTreeMap<u64, i32>,
    /// (incarnation, start, end) of every pause, in epoch ms.
    pub(super) pauses: Vec<(u64, u64, u64)>,
}

impl Fleet {
    pub(super) fn new(config: &Config, dir: &Path) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("find this program: {e}"))?;
        Ok(Fleet {
            exe,
            dir: dir.to_path_buf(),
            stale_ms: config.stale_ms,
            poll_ms: config.poll_ms,
            kind: config.kind(),
            slots: Vec::new(),
            next_inc: 0,
            killed: BTreeMap::new(),
            pauses: Vec::new(),
        })
    }

    pub(super) fn spawn(&mut self, extra: &[String]) -> Result<Slot, String> {
        let inc = self.next_inc;
        self.next_inc += 1;
        let child = Command::new(&self.exe)
            .arg("worker")
            .arg(&self.dir)
            .arg(inc.to_string())
            .arg(self.stale_ms.to_string())
            .arg(self.poll_ms.to_string())
            .arg(self.kind)
            .args(extra)
            .spawn()
            .map_err(|e| format!("start a worker: {e}"))?;
        let pid = i32::try_from(child.id()).map_err(text)?;
        Ok(Slot {
            child,
            pid,
            inc,
            paused_until: None,
            paused_since: 0,
        })
    }

    pub(super) fn signal(pid: i32, signal: Signal) -> Result<(), String> {
        let pid = Pid::from_raw(pid).ok_or("a worker with pid 0")?;
        kill_process(pid, signal).map_err(|e| format!("signal {signal:?} to {pid:?}: {e}"))
    }

    /// Stops `pid` with `SIGSTOP` and waits until it is stopped.
    pub(super) fn stop(pid: i32) -> Result<(), String> {
        Self::signal(pid, Signal::STOP)?;
        wait_for(Duration::from_secs(5), "a worker to stop", || {
            process_state(pid).is_none_or(|state| matches!(state, 'T' | 't' | 'Z' | 'X'))
        })
    }

    /// Kills slot `i` and waits for it; returns its pid. The slot is then
    /// restarted as a new incarnation.
    pub(super) fn kill_and_restart(&mut self, i: usize) -> Result<i32, String> {
        let slot = &mut self.slots[i];
        let pid = slot.pid;
        Self::signal(pid, Signal::KILL)?;
        slot.child
            .wait()
            .map_err(|e| format!("reap worker {pid}: {e}"))?;
        self.killed.insert(slot.inc, pid);
        let fresh = self.spawn(&[])?;
        self.slots[i] = fresh;
        Ok(pid)
    }

    pub(super) fn resume_due(&mut self, now: Instant) -> Result<(), String> {
        for slot in &mut self.slots {
            if slot.paused_until.is_some_and(|until| until <= now) {
                Self::signal(slot.pid, Signal::CONT)?;
                slot.paused_until = None;
                self.pauses.push((slot.inc, slot.paused_since, epoch_ms()));
            }
        }
        Ok(())
    }

    pub(super) fn resume_all(&mut self) -> Result<(), String> {
        for slot in &mut self.slots {
            if slot.paused_until.take().is_some() {
                Self::signal(slot.pid, Signal::CONT)?;
                self.pauses.push((slot.inc, slot.paused_since, epoch_ms()));
            }
        }
        Ok(())
    }

    /// An error if a worker ended without being told to.
    pub(super) fn check_alive(&mut self) -> Result<(), String> {
        for slot in &mut self.slots {
            if let Some(status) = slot.child.try_wait().map_err(text)? {
                return Err(format!(
                    "worker incarnation {} (pid {}) ended by itself: {status}",
                    slot.inc, slot.pid
                ));
            }
        }
        Ok(())
    }

    pub(super) fn slot_of(&self, pid: i32) -> Option<usize> {
        self.slots.iter().position(|s| s.pid == pid)
    }

    /// Waits for every worker to exit, each successfully.
    pub(super) fn wait_all(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let mut failures = Vec::new();
        while let Some(mut slot) = self.slots.pop() {
            loop {
                match slot.child.try_wait().map_err(text)? {
                    Some(status) if status.success() => break,
                    Some(status) => {
                        failures.push(format!("incarnation {}: {status}", slot.inc));
                        break;
                    }
                    None if Instant::now() > deadline => {
                        // Put it back so that Drop kills it.
                        self.slots.push(slot);
                        return Err(format!("workers still running after {limit:?}"));
                    }
                    None => std::thread::sleep(ms(10)),
                }
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(format!("workers failed: {}", failures.join(", ")))
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for slot in &mut self.slots {
            let _ = Self::signal(slot.pid, Signal::CONT);
            let _ = slot.child.kill();
            let _ = slot.child.wait();
        }
    }
}
