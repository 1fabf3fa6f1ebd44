//! The processes of the `--cli` mode: the wrappers, their commands, the
//! commands of killed wrappers (orphans), and the signals sent to them (see
//! the docs of `cli.rs`).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::process::{
    Pid, PidfdFlags, Signal, WaitOptions, kill_process_group, pidfd_open, pidfd_send_signal,
    waitpid,
};

use crate::observe::lock_pid;
use crate::rng::Rng;
use crate::util::{millis, ms, text, wait_exit};

/// Where the wrappers' and commands' standard error goes, in the run's
/// directory.
pub(super) const STDERR: &str = "wrappers.err";
/// The exit code of a command that found the lock file naming another owner.
pub(super) const NOT_OURS: i32 = 3;
/// `heldlock run`'s exit code for a command killed by `SIGKILL`.
const KILLED: i32 = 128 + 9;

/// The last lines of `path`, for an error message.
fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("broke a stale lock"))
        .collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

// ---------------------------------------------------------------- processes

/// A process and a pidfd of it.
pub(super) struct Proc {
    pid: i32,
    fd: OwnedFd,
}

impl Proc {
    fn open(pid: i32) -> Result<Self, String> {
        let raw = Pid::from_raw(pid).ok_or("a process with pid 0")?;
        let fd =
            pidfd_open(raw, PidfdFlags::empty()).map_err(|e| format!("pidfd_open({pid}): {e}"))?;
        Ok(Proc { pid, fd })
    }

    /// Sends `signal`; one that has ended is no error.
    fn signal(&self, signal: Signal) -> Result<(), String> {
        match pidfd_send_signal(&self.fd, signal) {
            Ok(()) | Err(Errno::SRCH) => Ok(()),
            Err(e) => Err(format!("signal {signal:?} to {}: {e}", self.pid)),
        }
    }

    fn dup(&self) -> Result<Self, String> {
        let fd = self.fd.try_clone().map_err(text)?;
        Ok(Proc { pid: self.pid, fd })
    }
}

/// The parent pid of `pid`, from `/proc/<pid>/stat`; `None` once it is gone.
pub(super) fn parent_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// The children of every process (parent pid to child pids), from `/proc`
/// (this kernel may lack `/proc/<pid>/task/<tid>/children`).
pub(super) fn children() -> Result<HashMap<i32, Vec<i32>>, String> {
    let mut map: HashMap<i32, Vec<i32>> = HashMap::new();
    for entry in fs::read_dir("/proc").map_err(|e| format!("list /proc: {e}"))? {
        let Some(pid) = entry
            .ok()
            .and_then(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        else {
            continue;
        };
        if let Some(parent) = parent_of(pid) {
            map.entry(parent).or_default().push(pid);
        }
    }
    Ok(map)
}

// ---------------------------------------------------------------- the fleet

/// A running `heldlock run`.
pub(super) struct Wrapper {
    child: Child,
    proc: Proc,
    /// Whether its command lingers past `stale`.
    lingers: bool,
    /// Its command was killed: exit 137 (or 0, had it just ended) is due.
    command_killed: bool,
}

/// One slot: a run of wrappers, one increment each.
pub(super) struct Slot {
    pub(super) inc: u64,
    pub(super) seq: u64,
    pub(super) wrapper: Option<Wrapper>,
    /// Commands that completed.
    pub(super) commits: u64,
}

/// A killed wrapper's command, now the driver's child.
pub(super) struct Orphan {
    proc: Proc,
    inc: u64,
    since: Instant,
    /// Killed on purpose (with its wrapper): a death by signal is due.
    killed: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Action {
    KillWrapper,
    KillCommand,
    KillBoth,
    /// A wrapper kill of a holder whose command lingers past `stale`.
    KillLingering,
    PauseWrapper,
    PauseCommand,
    PauseOrphan,
}

#[derive(Default)]
pub(super) struct Tally {
    pub(super) kills_wrapper: u64,
    pub(super) kills_command: u64,
    pub(super) kills_both: u64,
    pub(super) pauses_wrapper: u64,
    pub(super) pauses_command: u64,
    pub(super) pauses_orphan: u64,
    pub(super) longest_pause: Duration,
    pub(super) orphans: u64,
    /// Wrapper kills that left a lingering command holding the lock.
    pub(super) lingering_kills: u64,
    pub(super) orphans_past_stale: u64,
    pub(super) longest_orphan: Duration,
    pub(super) not_ours: u64,
    /// Wrappers that ended with a status of their own (an error).
    pub(super) wrapper_failures: u64,
}

impl Tally {
    pub(super) fn kills(&self) -> u64 {
        self.kills_wrapper + self.kills_command + self.kills_both
    }

    pub(super) fn pauses(&self) -> u64 {
        self.pauses_wrapper + self.pauses_command + self.pauses_orphan
    }

    /// The action a bounded run has not shown yet, if any.
    pub(super) fn missing(&self) -> Option<Action> {
        [
            (self.kills_command, Action::KillCommand),
            (self.kills_both, Action::KillBoth),
            (self.pauses_wrapper, Action::PauseWrapper),
            (self.pauses_command, Action::PauseCommand),
            (self.lingering_kills, Action::KillLingering),
        ]
        .into_iter()
        .find(|&(count, _)| count == 0)
        .map(|(_, action)| action)
    }
}

pub(super) struct Fleet {
    pub(super) heldlock: PathBuf,
    pub(super) exe: PathBuf,
    pub(super) dir: PathBuf,
    pub(super) lock: PathBuf,
    pub(super) runtime: PathBuf,
    pub(super) stderr: File,
    pub(super) stale_ms: u64,
    pub(super) poll_ms: u64,
    pub(super) linger_ms: (u64, u64),
    pub(super) linger_one_in: u64,
    pub(super) me: i32,
    pub(super) slots: Vec<Slot>,
    pub(super) orphans: Vec<Orphan>,
    /// Stopped processes and when to resume them.
    pub(super) paused: Vec<(Proc, Instant)>,
    pub(super) next_inc: u64,
    /// Incarnations whose command was killed (and its pid).
    pub(super) command_killed: BTreeMap<u64, i32>,
    /// Incarnations whose wrapper was killed (and its pid, which the lock
    /// records and trash of a killed release or break names).
    pub(super) wrapper_killed: BTreeMap<u64, i32>,
    pub(super) tally: Tally,
    pub(super) rng: Rng,
    /// The next command lingers (a bounded run still needs one).
    pub(super) want_linger: bool,
    pub(super) problems: Vec<String>,
    pub(super) stopping: bool,
}

impl Fleet {
    pub(super) fn start(&mut self, i: usize) -> Result<(), String> {
        let lingers = std::mem::take(&mut self.want_linger)
            || (self.linger_one_in > 0 && self.rng.one_in(self.linger_one_in));
        let linger = if lingers {
            self.rng.range(self.linger_ms.0, self.linger_ms.1)
        } else {
            0
        };
        let slot = &self.slots[i];
        let stderr = self.stderr.try_clone().map_err(text)?;
        let child = Command::new(&self.heldlock)
            .arg("run")
            .arg("--stale")
            .arg(format!("{}ms", self.stale_ms))
            .arg("--poll")
            .arg(format!("{}ms", self.poll_ms))
            .arg(&self.lock)
            .arg("--")
            .arg(&self.exe)
            .arg("cli-command")
            .arg(&self.dir)
            .arg(slot.inc.to_string())
            .arg(slot.seq.to_string())
            .arg(linger.to_string())
            .env("XDG_RUNTIME_DIR", &self.runtime)
            .env("TMPDIR", &self.runtime)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("start {}: {e}", self.heldlock.display()))?;
        let pid = i32::try_from(child.id()).map_err(text)?;
        // Our child, not yet waited for: the pid is its own.
        let proc = Proc::open(pid)?;
        self.slots[i].wrapper = Some(Wrapper {
            child,
            proc,
            lingers,
            command_killed: false,
        });
        Ok(())
    }

    pub(super) fn new_incarnation(&mut self, i: usize) {
        self.slots[i].inc = self.next_inc;
        self.slots[i].seq = 0;
        self.next_inc += 1;
    }

    /// Waits for the wrappers and orphans that ended, checks how they
    /// ended, and starts the next wrapper of each slot (unless stopping).
    pub(super) fn reap(&mut self, stale: Duration) -> Result<(), String> {
        for i in 0..self.slots.len() {
            let Some(wrapper) = &mut self.slots[i].wrapper else {
                continue;
            };
            let Some(status) = wrapper.child.try_wait().map_err(text)? else {
                continue;
            };
            let killed = wrapper.command_killed;
            self.slots[i].wrapper = None;
            let slot = &self.slots[i];
            match status.code() {
                Some(0) => {}
                Some(KILLED) if killed => {}
                Some(NOT_OURS) => {
                    self.tally.not_ours += 1;
                    self.problems.push(format!(
                        "incarnation {} seq {}: the command found the lock file naming another \
                         owner (see {STDERR})",
                        slot.inc, slot.seq
                    ));
                }
                _ => {
                    // Counted and reported, and the run goes on; a new
                    // incarnation, whatever its command did.
                    self.tally.wrapper_failures += 1;
                    self.problems.push(format!(
                        "heldlock run of incarnation {} seq {} ended by itself: {status}; the \
                         last lines of {STDERR} that are not breaks: {}",
                        slot.inc,
                        slot.seq,
                        tail(&self.dir.join(STDERR))
                    ));
                }
            }
            let failed = !matches!(status.code(), Some(0 | NOT_OURS | KILLED));
            if !failed && status.code() != Some(KILLED) {
                self.slots[i].commits += 1;
            }
            if killed || failed {
                self.new_incarnation(i);
            } else {
                self.slots[i].seq += 1;
            }
            if !self.stopping {
                self.start(i)?;
            }
        }
        let mut i = 0;
        while i < self.orphans.len() {
            let orphan = &self.orphans[i];
            let pid = Pid::from_raw(orphan.proc.pid).ok_or("an orphan with pid 0")?;
            let Some((_, status)) = waitpid(Some(pid), WaitOptions::NOHANG)
                .map_err(|e| format!("wait for orphan {}: {e}", orphan.proc.pid))?
            else {
                i += 1;
                continue;
            };
            let orphan = self.orphans.swap_remove(i);
            let lived = orphan.since.elapsed();
            if orphan.killed {
                continue;
            }
            self.tally.longest_orphan = self.tally.longest_orphan.max(lived);
            if lived > stale {
                self.tally.orphans_past_stale += 1;
            }
            match status.exit_status() {
                Some(0) => {}
                Some(NOT_OURS) => {
                    self.tally.not_ours += 1;
                    self.problems.push(format!(
                        "incarnation {}: the command its killed wrapper left found the lock file \
                         naming another owner after {} ms (see {STDERR})",
                        orphan.inc,
                        millis(lived)
                    ));
                }
                _ => self.problems.push(format!(
                    "the command of killed wrapper incarnation {} ended badly: {status:?}",
                    orphan.inc
                )),
            }
        }
        Ok(())
    }

    /// The command of slot `i`'s wrapper, if one runs, from `map`.
    fn command_of(&self, i: usize, map: &HashMap<i32, Vec<i32>>) -> Option<Proc> {
        let wrapper = self.slots[i].wrapper.as_ref()?.proc.pid;
        let pid = *map.get(&wrapper)?.first()?;
        let proc = Proc::open(pid).ok()?;
        // Opened, the pidfd is that process's: check that it is the one seen.
        (parent_of(pid) == Some(wrapper)).then_some(proc)
    }

    fn is_paused(&self, pid: i32) -> bool {
        self.paused.iter().any(|(p, _)| p.pid == pid)
    }

    /// Tries `action`; `false` when nothing fits it now.
    pub(super) fn act(&mut self, action: Action, max_pause: Duration) -> Result<bool, String> {
        let map = children()?;
        let holder = lock_pid(&self.lock).and_then(|pid| {
            self.slots
                .iter()
                .position(|s| s.wrapper.as_ref().is_some_and(|w| w.proc.pid == pid))
        });
        // Half the time the holder, else any slot; then any with a command.
        let mut order: Vec<usize> = Vec::new();
        if let Some(h) = holder.filter(|_| self.rng.one_in(2)) {
            order.push(h);
        }
        order.push(self.rng.index(self.slots.len()));
        order.extend(0..self.slots.len());
        let pause = ms(self
            .rng
            .range(10, u64::try_from(millis(max_pause)).unwrap_or(10)));
        match action {
            Action::KillWrapper
            | Action::KillCommand
            | Action::KillBoth
            | Action::KillLingering => {
                let lingering = action == Action::KillLingering;
                for &i in &order {
                    let Some(wrapper) = &self.slots[i].wrapper else {
                        continue;
                    };
                    // A wrapper whose command was killed is only waiting to
                    // report it: its incarnation is over.
                    if wrapper.command_killed || (lingering && !wrapper.lingers) {
                        continue;
                    }
                    let command = self.command_of(i, &map);
                    if command.is_none() && action != Action::KillWrapper {
                        continue;
                    }
                    self.kill(i, action, command)?;
                    return Ok(true);
                }
                if lingering
                    && !self
                        .slots
                        .iter()
                        .any(|s| s.wrapper.as_ref().is_some_and(|w| w.lingers))
                {
                    self.want_linger = true;
                }
                Ok(false)
            }
            Action::PauseWrapper | Action::PauseCommand => {
                for &i in &order {
                    let target = match (&self.slots[i].wrapper, action) {
                        (Some(w), Action::PauseWrapper) => w.proc.dup()?,
                        (Some(_), _) => match self.command_of(i, &map) {
                            Some(command) => command,
                            None => continue,
                        },
                        (None, _) => continue,
                    };
                    if self.is_paused(target.pid) {
                        continue;
                    }
                    target.signal(Signal::STOP)?;
                    self.paused.push((target, Instant::now() + pause));
                    if action == Action::PauseWrapper {
                        self.tally.pauses_wrapper += 1;
                    } else {
                        self.tally.pauses_command += 1;
                    }
                    self.tally.longest_pause = self.tally.longest_pause.max(pause);
                    return Ok(true);
                }
                Ok(false)
            }
            Action::PauseOrphan => {
                let free: Vec<usize> = (0..self.orphans.len())
                    .filter(|&o| {
                        !self.orphans[o].killed && !self.is_paused(self.orphans[o].proc.pid)
                    })
                    .collect();
                if free.is_empty() {
                    return Ok(false);
                }
                let target = self.orphans[free[self.rng.index(free.len())]].proc.dup()?;
                target.signal(Signal::STOP)?;
                self.paused.push((target, Instant::now() + pause));
                self.tally.pauses_orphan += 1;
                self.tally.longest_pause = self.tally.longest_pause.max(pause);
                Ok(true)
            }
        }
    }

    fn kill(&mut self, i: usize, action: Action, command: Option<Proc>) -> Result<(), String> {
        let inc = self.slots[i].inc;
        let Some(mut wrapper) = self.slots[i].wrapper.take() else {
            return Ok(());
        };
        if action == Action::KillCommand {
            let command = command.ok_or("no command to kill")?;
            command.signal(Signal::KILL)?;
            self.command_killed.insert(inc, command.pid);
            wrapper.command_killed = true;
            self.slots[i].wrapper = Some(wrapper);
            self.tally.kills_command += 1;
            return Ok(());
        }
        let both = action == Action::KillBoth;
        match &command {
            Some(command) if both => {
                self.command_killed.insert(inc, command.pid);
                if self.rng.one_in(2) {
                    // As a terminal's Ctrl-C would, but with SIGKILL. The
                    // wrapper is not yet waited for: its group is still ours.
                    let group = Pid::from_raw(wrapper.proc.pid).ok_or("a wrapper with pid 0")?;
                    kill_process_group(group, Signal::KILL)
                        .map_err(|e| format!("kill group {}: {e}", wrapper.proc.pid))?;
                } else {
                    command.signal(Signal::KILL)?;
                    wrapper.proc.signal(Signal::KILL)?;
                }
                self.tally.kills_both += 1;
            }
            _ => {
                wrapper.proc.signal(Signal::KILL)?;
                self.tally.kills_wrapper += 1;
                if command.is_some() {
                    self.tally.orphans += 1;
                    if wrapper.lingers {
                        self.tally.lingering_kills += 1;
                    }
                }
            }
        }
        wait_exit(&mut wrapper.child, Duration::from_secs(10))?;
        self.wrapper_killed.insert(inc, wrapper.proc.pid);
        // Its command, alive or just killed, is our child now.
        self.adopt(inc, both || wrapper.command_killed)?;
        self.new_incarnation(i);
        self.start(i)
    }

    /// Takes every child of ours that is neither a wrapper nor an orphan
    /// already known as an orphan of incarnation `inc`.
    fn adopt(&mut self, inc: u64, killed: bool) -> Result<(), String> {
        let map = children()?;
        for &pid in map.get(&self.me).into_iter().flatten() {
            let known = self
                .slots
                .iter()
                .any(|s| s.wrapper.as_ref().is_some_and(|w| w.proc.pid == pid))
                || self.orphans.iter().any(|o| o.proc.pid == pid);
            if !known {
                self.orphans.push(Orphan {
                    proc: Proc::open(pid)?,
                    inc,
                    since: Instant::now(),
                    killed,
                });
            }
        }
        Ok(())
    }

    pub(super) fn resume(&mut self, all: bool) -> Result<(), String> {
        let now = Instant::now();
        let mut i = 0;
        while i < self.paused.len() {
            if all || self.paused[i].1 <= now {
                let (proc, _) = self.paused.swap_remove(i);
                proc.signal(Signal::CONT)?;
            } else {
                i += 1;
            }
        }
        Ok(())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (proc, _) in &self.paused {
            let _ = proc.signal(Signal::CONT);
        }
        for slot in &mut self.slots {
            if let Some(wrapper) = &mut slot.wrapper {
                if let Some(group) = Pid::from_raw(wrapper.proc.pid) {
                    let _ = kill_process_group(group, Signal::KILL);
                }
                let _ = wrapper.child.wait();
            }
        }
        // Orphans, and whatever else became our child.
        if let Ok(map) = children() {
            for &pid in map.get(&self.me).into_iter().flatten() {
                if let Ok(proc) = Proc::open(pid) {
                    let _ = proc.signal(Signal::KILL);
                    let _ = waitpid(Pid::from_raw(pid), WaitOptions::empty());
                }
            }
        }
    }
}
