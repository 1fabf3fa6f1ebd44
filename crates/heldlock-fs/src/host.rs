//! Same-host liveness on Linux: who we are, and whether a holder is dead.
//!
//! A record written by heldlock on Linux carries `host=` (the host name),
//! `boot=` (the kernel's boot id), `pidns=` (the pid namespace's inode) and
//! `start=` (the process start time, in clock ticks since boot, from
//! `/proc/<pid>/stat`). A waiter whose own host, boot and pid namespace are the
//! same can prove the holder dead: its pid no longer exists, is a zombie, or
//! belongs to a process started at another time (the pid was reused). Any
//! doubt (other host, boot or namespace, missing fields, unreadable `/proc`)
//! means "not known dead", and the lock falls back to stale judgment.

use std::sync::{Arc, Mutex, PoisonError};

use rustix::fs::{Mode, OFlags};

use heldlock_core::{ChangeListener, HostProbe, LockRecord};

/// The [`HostProbe`] of this machine (Linux: `/proc`; elsewhere it writes no
/// fields and never judges a holder dead).
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalHost;

/// The identity of one process, as its records state it.
#[derive(Debug)]
struct Identity {
    pid: u32,
    host: Option<String>,
    boot: Option<String>,
    pidns: Option<String>,
    start: Option<String>,
}

/// This process's identity, read once per process id: a child forked
/// without `exec` inherits the parent's memory, and must not write the
/// parent's start time beside its own pid, or every waiter on this host
/// would take the child for a reused pid, judge it dead, and break its lock
/// while it runs.
fn identity() -> Arc<Identity> {
    static IDENTITY: Mutex<Option<Arc<Identity>>> = Mutex::new(None);
    let mut known = IDENTITY.lock().unwrap_or_else(PoisonError::into_inner);
    identity_cached(&mut known, std::process::id())
}

/// The identity of `pid`, from `known` when it was read for that pid.
fn identity_cached(known: &mut Option<Arc<Identity>>, pid: u32) -> Arc<Identity> {
    match known {
        Some(identity) if identity.pid == pid => Arc::clone(identity),
        _ => Arc::clone(known.insert(Arc::new(identity_of(pid)))),
    }
}

/// Reads the identity of process `pid` (this process, but for tests).
fn identity_of(pid: u32) -> Identity {
    Identity {
        pid,
        host: host_name(),
        boot: boot_id(),
        pidns: pid_namespace(pid),
        start: proc_stat(pid).ok().map(|stat| stat.start.to_string()),
    }
}

fn host_name() -> Option<String> {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_str().ok()?;
    valid_value(name).then(|| name.to_owned())
}

fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    valid_value(id).then(|| id.to_owned())
}

/// The inode number of the pid namespace of `pid` (`/proc/<pid>/ns/pid`
/// reads as `pid:[4026531836]`).
fn pid_namespace(pid: u32) -> Option<String> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()?;
    let link = link.to_str()?;
    let inode = link.strip_prefix("pid:[")?.strip_suffix(']')?;
    inode.parse::<u64>().ok().map(|n| n.to_string())
}

/// A field value must be one token without `=`.
fn valid_value(value: &str) -> bool {
    !value.is_empty() && !value.contains(|c: char| c.is_whitespace() || c == '=')
}

/// What `/proc/<pid>/stat` says about a process.
#[derive(Debug, PartialEq, Eq)]
struct ProcStat {
    state: char,
    start: u64,
}

/// Reads the state (field 3) and start time (field 22) of `pid`.
///
/// In one `read` into a buffer that holds any stat line: a waiter asks this
/// about every new holder it looks at, and `read_to_string` would grow its
/// buffer through five reads (a `/proc` file reports its size as zero).
fn proc_stat(pid: u32) -> std::io::Result<ProcStat> {
    let path = format!("/proc/{pid}/stat");
    let file = rustix::fs::open(&path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    let mut buffer = [0u8; 2048];
    let read = rustix::io::read(&file, &mut buffer)?;
    let text = if read < buffer.len() {
        String::from_utf8_lossy(&buffer[..read]).into_owned()
    } else {
        // Longer than any stat line we know of: read it all.
        std::fs::read_to_string(&path)?
    };
    parse_stat(&text).ok_or_else(|| std::io::Error::other("unexpected /proc stat format"))
}

/// The start time of `pid` (clock ticks since boot), if it runs.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    proc_stat(pid).ok().map(|stat| stat.start)
}

/// `pid (comm) state ppid ...`: `comm` may hold spaces and parentheses, so
/// the fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the state (field 3) come fields 4..; the start time is field 22.
    let start = fields.nth(18)?.parse().ok()?;
    Some(ProcStat { state, start })
}

impl LocalHost {
    /// The probe of this machine.
    pub fn new() -> Self {
        LocalHost
    }

    /// Whether `record` was written on this host, boot and pid namespace
    /// (so its pid means the same process to us), and by which start time.
    fn same_host_start(record: &LockRecord) -> Option<u64> {
        let me = identity();
        let same = |key: &str, ours: &Option<String>| {
            ours.as_deref()
                .is_some_and(|ours| record.field(key) == Some(ours))
        };
        if !(same("host", &me.host) && same("boot", &me.boot) && same("pidns", &me.pidns)) {
            return None;
        }
        record.field("start")?.parse().ok()
    }
}

impl HostProbe for LocalHost {
    fn fields(&self) -> Vec<(String, String)> {
        let me = identity();
        [
            ("host", &me.host),
            ("boot", &me.boot),
            ("pidns", &me.pidns),
            ("start", &me.start),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.as_ref().map(|v| (key.to_owned(), v.clone())))
        .collect()
    }

    fn holder_is_dead(&self, record: &LockRecord) -> bool {
        let Some(start) = Self::same_host_start(record) else {
            return false;
        };
        if crate::watch::watched_alive(record.pid, start) {
            return false; // its pidfd has not fired: it runs
        }
        match proc_stat(record.pid) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(_) => false,
            // A zombie cannot refresh; another start time is another process.
            Ok(stat) => matches!(stat.state, 'Z' | 'X') || stat.start != start,
        }
    }

    fn watch_exit(&self, record: &LockRecord) -> Option<ChangeListener> {
        let start = Self::same_host_start(record)?;
        crate::watch::process_exit(record.pid, start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn stat_parsing_counts_from_the_last_parenthesis() {
        let line = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                state: 'S',
                start: 987654
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) R 1 2"), None);
    }

    #[test]
    fn the_identity_follows_the_process_id() {
        let ours = identity();
        if ours.start.is_none() {
            eprintln!("no /proc identity on this machine; skipping");
            return;
        }
        assert_eq!(ours.pid, std::process::id());
        assert!(Arc::ptr_eq(&ours, &identity()), "read once per process");
        // A forked child finds its parent's identity cached, and must read
        // its own: its start time, not its parent's.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut known = Some(Arc::clone(&ours));
        let theirs = identity_cached(&mut known, child.id());
        let child_start = start_time(child.id()).map(|start| start.to_string());
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(theirs.pid, child.id());
        assert_eq!(theirs.start, child_start);
        assert!(known.is_some_and(|known| Arc::ptr_eq(&known, &theirs)));
        assert_eq!(theirs.pidns, ours.pidns);
        assert_eq!((&theirs.host, &theirs.boot), (&ours.host, &ours.boot));
    }

    #[test]
    fn our_own_record_is_alive_and_a_reused_pid_is_dead() {
        let probe = LocalHost::new();
        let fields = probe.fields();
        if fields.len() < 4 {
            eprintln!("no /proc identity on this machine; skipping");
            return;
        }
        let mut record = LockRecord::for_this_process(SystemTime::now());
        record.fields = fields;
        assert!(!probe.holder_is_dead(&record), "we are alive");
        for (key, value) in &mut record.fields {
            if key == "start" {
                *value = "1".into(); // same pid, another start time
            }
        }
        assert!(
            probe.holder_is_dead(&record),
            "a reused pid is another process"
        );
    }

    #[test]
    fn records_from_elsewhere_are_never_judged_dead_by_pid() {
        let probe = LocalHost::new();
        let mut record = LockRecord::for_this_process(SystemTime::now());
        record.pid = u32::MAX - 1; // surely no such process here
        record.fields = probe.fields();
        let dead_here = probe.holder_is_dead(&record);
        for other in ["host", "boot", "pidns"] {
            let mut elsewhere = record.clone();
            for (key, value) in &mut elsewhere.fields {
                if key == other {
                    value.push_str("-elsewhere");
                }
            }
            assert!(!probe.holder_is_dead(&elsewhere), "another {other}");
        }
        let mut reference_format = record.clone();
        reference_format.fields.clear();
        assert!(
            !probe.holder_is_dead(&reference_format),
            "no fields: not provable"
        );
        assert!(
            dead_here || probe.fields().len() < 4,
            "a missing pid on this host is dead"
        );
    }
}
