//! Same-host liveness on Linux: who we are, and whether a holder is dead.
//!
//! A record written by heldlock on Linux carries `host=` (the host name),
//! `boot=` (the kernel's boot id), `pidns=` (the pid namespace's inode),
//! `timens=` (the time namespace's inode) and `start=` (the process start
//! time, in clock ticks since boot, from `/proc/<pid>/stat`). A pid means the
//! same process only within one pid namespace, and a start time the same
//! instant only within one time namespace (`/proc` shifts it by the reader's
//! boot-clock offset), so only a waiter that agrees on all of them can prove
//! the holder dead: its pid no longer exists (`/proc` has no entry and the
//! kernel confirms it), its process has exited (a zombie with only its first
//! thread left), or it belongs to a process started at another time (the pid
//! was reused). Any doubt (other host, boot or namespace, missing fields,
//! unreadable or hidden `/proc` entries) means "not known dead", and the lock
//! falls back to stale judgment.

use std::sync::{Arc, OnceLock};

#[cfg(any(target_os = "linux", target_os = "android"))]
use rustix::fs::{Mode, OFlags};

use heldlock_core::{ChangeListener, HostProbe, LockRecord};

/// The [`HostProbe`] of this machine (Linux: `/proc`; elsewhere it writes
/// only `host=`, proves no holder dead and no kernel lock live).
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalHost;

/// The identity of one process, as its records state it.
#[derive(Debug)]
struct Identity {
    pid: u32,
    host: Option<String>,
    boot: Option<String>,
    pidns: Option<String>,
    timens: TimeNamespace,
    start: Option<String>,
}

/// Our time namespace, as `/proc` tells it.
#[cfg_attr(
    not(any(target_os = "linux", target_os = "android")),
    allow(dead_code, reason = "read from /proc, on Linux only")
)]
#[derive(Clone, Debug, PartialEq, Eq)]
enum TimeNamespace {
    /// The inode of our time namespace.
    Inode(String),
    /// The kernel has no time namespaces (before Linux 5.6, or built without
    /// `CONFIG_TIME_NS`): every process on it reads one boot clock, and no
    /// record written on it carries `timens=`.
    NoneOnThisKernel,
    /// `/proc` did not tell: no pid verdict.
    Unknown,
}

/// This process's identity, read once, and read again (uncached) in a child
/// forked without `exec`: the child inherits the parent's memory, and must
/// not write the parent's start time beside its own pid, or every waiter on
/// this host would take the child for a reused pid, judge it dead, and
/// break its lock while it runs. No lock is held between calls, so a fork
/// leaves none taken (except during the very first read, which a fork on
/// another thread could interrupt: the child's first call would then wait
/// for good).
fn identity() -> Arc<Identity> {
    static FIRST: OnceLock<Arc<Identity>> = OnceLock::new();
    identity_in(&FIRST, std::process::id())
}

/// The identity of this process, whose pid is `pid`, from `first` when it
/// was read for that pid.
fn identity_in(first: &OnceLock<Arc<Identity>>, pid: u32) -> Arc<Identity> {
    let known = first.get_or_init(|| Arc::new(read_identity(pid)));
    if known.pid == pid {
        Arc::clone(known)
    } else {
        Arc::new(read_identity(pid))
    }
}

/// Reads the identity of this process, whose pid is `pid`.
///
/// Its start time and pid namespace come from `/proc/self`, and only when
/// `/proc` agrees that this process is `pid`: a `/proc` mounted for another
/// pid namespace (`unshare -pf` without `--mount-proc`) would otherwise
/// describe another process, and waiters would judge this one by that
/// process's life. Without them, no waiter judges this process's locks by
/// pid at all. `/proc/self/stat` tells both: its first field is the pid by
/// which that `/proc` knows us (what `/proc/self` links to), so one read
/// serves for the check and the start time.
///
/// The time namespace is read with the start time, since the record states
/// through which boot clock that start time was read (a process enters
/// another time namespace only while it has no other thread, so no `setns`
/// falls between the two reads). A process that enters another one after
/// its first lock keeps what it read: its records stay true, but its own
/// verdicts would read other processes' start times through the new clock.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn read_identity(pid: u32) -> Identity {
    let start = match read_stat_with_pid("/proc/self/stat") {
        Ok((seen_as, stat)) if seen_as == pid => Some(stat.start),
        _ => None,
    };
    let proc_agrees = start.is_some();
    let pidns = proc_agrees.then(pid_namespace).flatten();
    // The pid namespace's link proves that `/proc/self/ns` is there, so a
    // missing time link means a kernel without time namespaces, not a
    // missing `/proc`.
    let timens = if pidns.is_some() {
        time_namespace()
    } else {
        TimeNamespace::Unknown
    };
    Identity {
        pid,
        host: host_name(),
        boot: boot_id(),
        pidns,
        timens,
        start: start.map(|start| start.to_string()),
    }
}

/// Off Linux only the host name: without a boot id no peer shares our host
/// (no kernel lock proves us alive to it) and none judges us by pid.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn read_identity(pid: u32) -> Identity {
    Identity {
        pid,
        host: host_name(),
        boot: None,
        pidns: None,
        timens: TimeNamespace::Unknown,
        start: None,
    }
}

fn host_name() -> Option<String> {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_str().ok()?;
    valid_value(name).then(|| name.to_owned())
}

/// The kernel's boot id, in one `read` (36 characters and a newline):
/// `read_to_string` would take a `statx` and three reads, since a `/proc`
/// file reports its size as zero.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn boot_id() -> Option<String> {
    const PATH: &str = "/proc/sys/kernel/random/boot_id";
    let file = rustix::fs::open(PATH, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).ok()?;
    let mut buffer = [0u8; 64];
    let read = rustix::io::read(&file, &mut buffer).ok()?;
    let whole;
    let bytes = if read < buffer.len() {
        &buffer[..read]
    } else {
        // Longer than any boot id we know of: read it all.
        whole = std::fs::read(PATH).ok()?;
        &whole
    };
    let id = std::str::from_utf8(bytes).ok()?.trim();
    valid_value(id).then(|| id.to_owned())
}

/// The inode number of our pid namespace (`/proc/self/ns/pid` reads as
/// `pid:[4026531836]`).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn pid_namespace() -> Option<String> {
    let link = std::fs::read_link("/proc/self/ns/pid").ok()?;
    namespace_inode(&link, "pid")
}

/// Our time namespace (`/proc/self/ns/time` reads as `time:[4026531834]`).
/// Only asked once `/proc/self/ns` is known to be there.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn time_namespace() -> TimeNamespace {
    match std::fs::read_link("/proc/self/ns/time") {
        Ok(link) => {
            namespace_inode(&link, "time").map_or(TimeNamespace::Unknown, TimeNamespace::Inode)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => TimeNamespace::NoneOnThisKernel,
        Err(_) => TimeNamespace::Unknown,
    }
}

/// The inode number in a namespace link `<kind>:[<inode>]`.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn namespace_inode(link: &std::path::Path, kind: &str) -> Option<String> {
    let inode = link
        .to_str()?
        .strip_prefix(kind)?
        .strip_prefix(":[")?
        .strip_suffix(']')?;
    inode.parse::<u64>().ok().map(|n| n.to_string())
}

/// A field value must be one token without `=`.
fn valid_value(value: &str) -> bool {
    !value.is_empty() && !value.contains(|c: char| c.is_whitespace() || c == '=')
}

/// What `/proc/<pid>/stat` says about a process.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[derive(Debug, PartialEq, Eq)]
struct ProcStat {
    state: char,
    /// The process's thread count, a zombie first thread included (a
    /// process whose first thread ended with `pthread_exit` shows as a
    /// zombie while the others run).
    threads: u64,
    start: u64,
}

#[cfg(any(target_os = "linux", target_os = "android"))]
impl ProcStat {
    /// Whether the whole process has exited (a zombie not yet reaped).
    fn exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X') && self.threads <= 1
    }
}

/// Reads the state (field 3), thread count (field 20) and start time
/// (field 22) of `pid`.
///
/// In one `read` into a buffer that holds any stat line: a waiter asks this
/// about every new holder it looks at, and `read_to_string` would grow its
/// buffer through five reads (a `/proc` file reports its size as zero).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn proc_stat(pid: u32) -> std::io::Result<ProcStat> {
    read_stat(&format!("/proc/{pid}/stat"))
}

/// Reads and parses a stat file of `/proc`.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn read_stat(path: &str) -> std::io::Result<ProcStat> {
    read_stat_with_pid(path).map(|(_, stat)| stat)
}

/// Reads and parses a stat file of `/proc`, with its first field: the pid
/// by which that `/proc` knows the process.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn read_stat_with_pid(path: &str) -> std::io::Result<(u32, ProcStat)> {
    let file = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    let mut buffer = [0u8; 2048];
    let read = rustix::io::read(&file, &mut buffer)?;
    let whole;
    let bytes = if read < buffer.len() {
        &buffer[..read]
    } else {
        // Longer than any stat line we know of: read it all.
        whole = std::fs::read(path)?;
        &whole
    };
    // A command name need not be UTF-8; the numbers around it always are.
    let text = String::from_utf8_lossy(bytes);
    let pid = text.split(' ').next().and_then(|pid| pid.parse().ok());
    pid.zip(parse_stat(&text))
        .ok_or_else(|| std::io::Error::other("unexpected /proc stat format"))
}

/// The start time of `pid` (clock ticks since boot), if it exists (a zombie
/// included).
#[cfg(all(test, any(target_os = "linux", target_os = "android")))]
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    proc_stat(pid).ok().map(|stat| stat.start)
}

/// What this host can prove about a process.
#[cfg_attr(
    not(any(target_os = "linux", target_os = "android")),
    allow(dead_code, reason = "proven through /proc, on Linux only")
)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// It runs, started at the expected time.
    Alive,
    /// It is gone, has exited, or the pid names another process now.
    Dead,
    /// `/proc` cannot tell (hidden by `hidepid`, unreadable, unexpected).
    Unknown,
}

/// Whether the process `pid` that started at `start` (clock ticks since
/// boot) still runs.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn liveness(pid: u32, start: u64) -> Liveness {
    match proc_stat(pid) {
        // `/proc` hides other users' processes when mounted with
        // `hidepid=invisible`: only the kernel's own answer proves the pid
        // gone.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if no_such_process(pid) {
                Liveness::Dead
            } else {
                Liveness::Unknown
            }
        }
        Err(_) => Liveness::Unknown,
        // A zombie cannot refresh; another start time is another process.
        Ok(stat) if stat.exited() || stat.start != start => Liveness::Dead,
        Ok(_) => Liveness::Alive,
    }
}

/// Off Linux there is no `/proc` to tell.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn liveness(_pid: u32, _start: u64) -> Liveness {
    Liveness::Unknown
}

/// Whether the kernel says that no process `pid` exists (a signal 0 fails
/// with `ESRCH`; `EPERM` means it exists under another user). A pid beyond
/// `i32` cannot exist; pid 0 is not asked about (a signal to pid 0 goes to
/// our own process group).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn no_such_process(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return true;
    };
    let Some(pid) = rustix::process::Pid::from_raw(pid) else {
        return false;
    };
    rustix::process::test_kill_process(pid) == Err(rustix::io::Errno::SRCH)
}

/// `pid (comm) state ppid ...`: `comm` may hold spaces and parentheses, so
/// the fields are counted from the last `)`.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the state (field 3) come fields 4..: the thread count is field
    // 20, the start time field 22.
    let threads = fields.nth(16)?.parse().ok()?;
    let start = fields.nth(1)?.parse().ok()?;
    Some(ProcStat {
        state,
        threads,
        start,
    })
}

impl LocalHost {
    /// The probe of this machine.
    pub fn new() -> Self {
        LocalHost
    }
}

/// Whether `record` states `ours` for `key`. A value missing on either side
/// agrees with nothing.
fn agrees(record: &LockRecord, key: &str, ours: Option<&str>) -> bool {
    ours.is_some_and(|ours| record.field(key) == Some(ours))
}

fn shares_host_with(me: &Identity, record: &LockRecord) -> bool {
    agrees(record, "host", me.host.as_deref()) && agrees(record, "boot", me.boot.as_deref())
}

/// The start time of the process that wrote `record`, when its pid and start
/// time mean to `me` what they meant to it: same host, boot, pid namespace
/// and time namespace. `None` (no pid verdict, the heartbeat's age decides)
/// on any disagreement, a field missing on either side included.
///
/// A record without `timens=` agrees only on a kernel without time
/// namespaces: the same boot means the same kernel, so its writer had none
/// either, and there is only one boot clock. Where the kernel has them, a
/// record without the field (an older heldlock's) is not judged by pid.
fn pid_verdict_start(me: &Identity, record: &LockRecord) -> Option<u64> {
    let timens_agrees = match &me.timens {
        TimeNamespace::Inode(ours) => agrees(record, "timens", Some(ours)),
        TimeNamespace::NoneOnThisKernel => record.field("timens").is_none(),
        TimeNamespace::Unknown => false,
    };
    let agree = shares_host_with(me, record)
        && agrees(record, "pidns", me.pidns.as_deref())
        && timens_agrees;
    if !agree {
        return None;
    }
    record.field("start")?.parse().ok()
}

impl HostProbe for LocalHost {
    fn fields(&self) -> Vec<(String, String)> {
        let me = identity();
        let timens = match &me.timens {
            TimeNamespace::Inode(inode) => Some(inode),
            TimeNamespace::NoneOnThisKernel | TimeNamespace::Unknown => None,
        };
        [
            ("host", me.host.as_ref()),
            ("boot", me.boot.as_ref()),
            ("pidns", me.pidns.as_ref()),
            ("timens", timens),
            ("start", me.start.as_ref()),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.map(|v| (key.to_owned(), v.clone())))
        .collect()
    }

    /// The record's host and boot are ours, so the kernel it used is the
    /// one we use: a kernel lock it holds on a file is visible to us
    /// whatever pid or time namespace either of us is in. `false` when the
    /// record or we lack the host or the boot.
    fn shares_host(&self, record: &LockRecord) -> bool {
        shares_host_with(&identity(), record)
    }

    fn holder_is_dead(&self, record: &LockRecord) -> bool {
        let Some(start) = pid_verdict_start(&identity(), record) else {
            return false;
        };
        if crate::watch::watched_alive(record.pid, start) {
            return false; // its pidfd has not fired: it runs
        }
        liveness(record.pid, start) == Liveness::Dead
    }

    fn watch_exit(&self, record: &LockRecord) -> Option<ChangeListener> {
        let start = pid_verdict_start(&identity(), record)?;
        crate::watch::process_exit(record.pid, start)
    }
}

#[cfg(all(test, any(target_os = "linux", target_os = "android")))]
mod tests;
