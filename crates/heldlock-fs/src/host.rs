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
    timens: TimeNamespace,
    start: Option<String>,
}

/// Our time namespace, as `/proc` tells it.
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
/// pid at all.
///
/// The time namespace is read with the start time, since the record states
/// through which boot clock that start time was read (a process enters
/// another time namespace only while it has no other thread, so no `setns`
/// falls between the two reads). A process that enters another one after
/// its first lock keeps what it read: its records stay true, but its own
/// verdicts would read other processes' start times through the new clock.
fn read_identity(pid: u32) -> Identity {
    let proc_agrees = proc_self_pid() == Some(pid);
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
        start: proc_agrees
            .then(|| read_stat("/proc/self/stat").ok())
            .flatten()
            .map(|stat| stat.start.to_string()),
    }
}

/// The pid that `/proc` gives this process.
fn proc_self_pid() -> Option<u32> {
    std::fs::read_link("/proc/self")
        .ok()?
        .to_str()?
        .parse()
        .ok()
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

/// The inode number of our pid namespace (`/proc/self/ns/pid` reads as
/// `pid:[4026531836]`).
fn pid_namespace() -> Option<String> {
    let link = std::fs::read_link("/proc/self/ns/pid").ok()?;
    namespace_inode(&link, "pid")
}

/// Our time namespace (`/proc/self/ns/time` reads as `time:[4026531834]`).
/// Only asked once `/proc/self/ns` is known to be there.
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
#[derive(Debug, PartialEq, Eq)]
struct ProcStat {
    state: char,
    /// The process's thread count, a zombie first thread included (a
    /// process whose first thread ended with `pthread_exit` shows as a
    /// zombie while the others run).
    threads: u64,
    start: u64,
}

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
fn proc_stat(pid: u32) -> std::io::Result<ProcStat> {
    read_stat(&format!("/proc/{pid}/stat"))
}

/// Reads and parses a stat file of `/proc`.
fn read_stat(path: &str) -> std::io::Result<ProcStat> {
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
    // A command name need not be UTF-8; the numbers after it always are.
    parse_stat(&String::from_utf8_lossy(bytes))
        .ok_or_else(|| std::io::Error::other("unexpected /proc stat format"))
}

/// The start time of `pid` (clock ticks since boot), if it exists (a zombie
/// included).
#[cfg(test)]
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    proc_stat(pid).ok().map(|stat| stat.start)
}

/// What this host can prove about a process.
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

/// Whether the kernel says that no process `pid` exists (a signal 0 fails
/// with `ESRCH`; `EPERM` means it exists under another user). A pid beyond
/// `i32` cannot exist; pid 0 is not asked about (a signal to pid 0 goes to
/// our own process group).
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
                threads: 1,
                start: 987654
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) R 1 2"), None);
    }

    #[test]
    fn a_zombie_first_thread_with_others_running_has_not_exited() {
        // Field 20 (threads) is 3: the first thread ended, two still run.
        let line = "77 (w) Z 1 77 77 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 5555 1000 10";
        let stat = parse_stat(line).unwrap();
        assert_eq!((stat.state, stat.threads, stat.start), ('Z', 3, 5555));
        assert!(!stat.exited());
        let dead = parse_stat(&line.replace(" 0 3 0 ", " 0 1 0 ")).unwrap();
        assert!(dead.exited());
    }

    #[test]
    fn the_identity_is_read_for_our_pid_and_only_where_proc_agrees() {
        let ours = identity();
        if ours.start.is_none() {
            eprintln!("no /proc identity on this machine; skipping");
            return;
        }
        assert_eq!(ours.pid, std::process::id());
        assert!(Arc::ptr_eq(&ours, &identity()), "read once");
        assert_eq!(
            ours.start,
            start_time(std::process::id()).map(|start| start.to_string())
        );
        // A process that `/proc` knows by another pid (a `/proc` of another
        // pid namespace): no start time and no namespace, so that no waiter
        // judges it by pid.
        let elsewhere = read_identity(std::process::id().wrapping_add(1));
        assert_eq!((elsewhere.start, elsewhere.pidns), (None, None));
        assert_eq!(elsewhere.timens, TimeNamespace::Unknown);
        assert_eq!((&elsewhere.host, &elsewhere.boot), (&ours.host, &ours.boot));
    }

    #[test]
    fn a_forked_child_reads_its_own_identity() {
        let parent = std::process::id();
        let first = OnceLock::new();
        let read_by_parent = identity_in(&first, parent);
        assert!(Arc::ptr_eq(&read_by_parent, &identity_in(&first, parent)));
        // The child's pid differs from the one the inherited cache was read
        // for: it reads afresh, for its own pid, never the parent's start.
        let child = parent.wrapping_add(1);
        let read_by_child = identity_in(&first, child);
        assert_eq!(read_by_child.pid, child);
        assert!(!Arc::ptr_eq(&read_by_child, &read_by_parent));
        if read_by_parent.start.is_some() {
            assert_ne!(read_by_child.start, read_by_parent.start);
        }
    }

    #[test]
    fn only_the_kernel_proves_a_pid_gone() {
        assert!(!no_such_process(std::process::id()), "we exist");
        assert!(!no_such_process(1), "init exists, whoever owns it");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap(); // reaped: the pid is free
        assert!(
            no_such_process(pid) || proc_stat(pid).is_ok(),
            "gone, or reused"
        );
        assert!(!no_such_process(0), "pid 0 is no process to judge");
        assert!(no_such_process(u32::MAX), "beyond any pid");
    }

    #[test]
    fn a_zombie_is_not_running() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not reaped yet: a zombie once it exits (real time is what is
        // waited for, with a bound far beyond a process's exit).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while proc_stat(pid).is_ok_and(|stat| stat.state != 'Z') {
            assert!(std::time::Instant::now() < deadline, "`true` never exited");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let exists = start_time(pid);
        let judged = exists.map(|start| liveness(pid, start));
        child.wait().unwrap();
        if exists.is_none() {
            eprintln!("no /proc here; skipping");
            return;
        }
        assert_eq!(judged, Some(Liveness::Dead), "a zombie has exited");
    }

    #[test]
    fn an_unreaped_dead_holder_is_dead_even_once_its_exit_is_watched() {
        let probe = LocalHost::new();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut record = LockRecord::for_this_process(SystemTime::now());
        record.pid = pid;
        record.fields = probe.fields();
        let judged_here = record.field("start").is_some() && record.field("pidns").is_some();
        let Some(start) = start_time(pid).filter(|_| judged_here) else {
            child.kill().unwrap();
            child.wait().unwrap();
            eprintln!("no /proc here; skipping");
            return;
        };
        for (key, value) in &mut record.fields {
            if key == "start" {
                *value = start.to_string();
            }
        }
        child.kill().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while proc_stat(pid).is_ok_and(|stat| stat.state != 'Z') {
            assert!(
                std::time::Instant::now() < deadline,
                "the kill did not take"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // A waiter watches the holder's exit, then asks whether it is dead.
        let exit = probe.watch_exit(&record);
        let dead = probe.holder_is_dead(&record);
        drop(exit);
        child.wait().unwrap();
        assert!(dead, "a zombie holder was taken for alive");
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
        for other in ["host", "boot", "pidns", "timens"] {
            let mut elsewhere = record.clone();
            for (key, value) in &mut elsewhere.fields {
                if key == other {
                    value.push_str("-elsewhere");
                }
            }
            assert!(!probe.holder_is_dead(&elsewhere), "another {other}");
            assert!(probe.watch_exit(&elsewhere).is_none(), "another {other}");
            let mut without = record.clone();
            without.fields.retain(|(key, _)| key != other);
            if identity().timens != TimeNamespace::NoneOnThisKernel || other != "timens" {
                assert!(!probe.holder_is_dead(&without), "no {other}");
                assert!(probe.watch_exit(&without).is_none(), "no {other}");
            }
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
    /// An identity with every field known, time namespace `222`.
    fn me() -> Identity {
        Identity {
            pid: 7,
            host: Some("h".into()),
            boot: Some("b".into()),
            pidns: Some("111".into()),
            timens: TimeNamespace::Inode("222".into()),
            start: Some("5".into()),
        }
    }

    fn record_with(fields: &[(&str, &str)]) -> LockRecord {
        let mut record = LockRecord::for_this_process(SystemTime::now());
        record.pid = 4242;
        record.fields = fields
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        record
    }

    const AGREEING: [(&str, &str); 5] = [
        ("host", "h"),
        ("boot", "b"),
        ("pidns", "111"),
        ("timens", "222"),
        ("start", "42"),
    ];

    /// `AGREEING` with `key` set to `value`, or left out when `value` is `None`.
    fn agreeing_but(key: &str, value: Option<&str>) -> LockRecord {
        let fields: Vec<(&str, &str)> = AGREEING
            .iter()
            .filter_map(|&(k, v)| {
                if k == key {
                    value.map(|value| (k, value))
                } else {
                    Some((k, v))
                }
            })
            .collect();
        record_with(&fields)
    }

    #[test]
    fn a_pid_verdict_needs_every_namespace_to_agree() {
        assert_eq!(pid_verdict_start(&me(), &record_with(&AGREEING)), Some(42));
        for key in ["host", "boot", "pidns", "timens", "start"] {
            let other = agreeing_but(key, Some("999"));
            if key == "start" {
                assert_eq!(pid_verdict_start(&me(), &other), Some(999));
            } else {
                assert_eq!(pid_verdict_start(&me(), &other), None, "another {key}");
            }
            let missing = agreeing_but(key, None);
            assert_eq!(pid_verdict_start(&me(), &missing), None, "no {key}");
        }
        let garbled = agreeing_but("start", Some("soon"));
        assert_eq!(pid_verdict_start(&me(), &garbled), None);
    }

    #[test]
    fn what_we_do_not_know_of_ourselves_agrees_with_nothing() {
        let record = record_with(&AGREEING);
        let unknown_time = Identity {
            timens: TimeNamespace::Unknown,
            ..me()
        };
        assert_eq!(pid_verdict_start(&unknown_time, &record), None);
        let without_time = agreeing_but("timens", None);
        assert_eq!(pid_verdict_start(&unknown_time, &without_time), None);
        for blank in ["host", "boot", "pidns"] {
            let mut ours = me();
            match blank {
                "host" => ours.host = None,
                "boot" => ours.boot = None,
                _ => ours.pidns = None,
            }
            assert_eq!(pid_verdict_start(&ours, &record), None, "our {blank}");
        }
    }

    #[test]
    fn without_time_namespaces_in_the_kernel_no_record_carries_one() {
        let ours = Identity {
            timens: TimeNamespace::NoneOnThisKernel,
            ..me()
        };
        // Same boot, same kernel: its writer had no time namespace either.
        let without = agreeing_but("timens", None);
        assert_eq!(pid_verdict_start(&ours, &without), Some(42));
        // A record that names one was not written on this kernel.
        assert_eq!(pid_verdict_start(&ours, &record_with(&AGREEING)), None);
        // The other fields still decide.
        let mut elsewhere = without.clone();
        elsewhere.fields.retain(|(key, _)| key != "pidns");
        assert_eq!(pid_verdict_start(&ours, &elsewhere), None);
    }

    #[test]
    fn sharing_the_host_needs_only_the_host_and_the_boot() {
        let host_and_boot = record_with(&[("host", "h"), ("boot", "b")]);
        assert!(shares_host_with(&me(), &host_and_boot));
        let other_namespaces = record_with(&[
            ("host", "h"),
            ("boot", "b"),
            ("pidns", "1"),
            ("timens", "2"),
        ]);
        assert!(shares_host_with(&me(), &other_namespaces));
        for key in ["host", "boot"] {
            assert!(!shares_host_with(&me(), &agreeing_but(key, Some("x"))));
            assert!(!shares_host_with(&me(), &agreeing_but(key, None)));
        }
        assert!(
            !shares_host_with(&me(), &record_with(&[])),
            "the reference's"
        );
        let no_boot = Identity { boot: None, ..me() };
        assert!(!shares_host_with(&no_boot, &record_with(&AGREEING)));
        let probe = LocalHost::new();
        let ours = identity();
        if ours.host.is_some() && ours.boot.is_some() {
            let mut record = LockRecord::for_this_process(SystemTime::now());
            record.fields = probe.fields();
            record
                .fields
                .retain(|(key, _)| key == "host" || key == "boot");
            assert!(probe.shares_host(&record));
        }
    }

    #[test]
    fn namespace_links_are_parsed_by_kind() {
        let parse = |link: &str, kind| namespace_inode(std::path::Path::new(link), kind);
        assert_eq!(
            parse("time:[4026531834]", "time"),
            Some("4026531834".into())
        );
        assert_eq!(parse("pid:[4026531836]", "pid"), Some("4026531836".into()));
        assert_eq!(parse("pid:[4026531836]", "time"), None);
        assert_eq!(parse("time:[]", "time"), None);
        assert_eq!(parse("time:[12", "time"), None);
        assert_eq!(parse("time_for_children:[1]", "time"), None);
    }

    #[test]
    fn we_write_our_time_namespace_when_the_kernel_has_one() {
        let ours = identity();
        if ours.pidns.is_none() {
            eprintln!("no /proc identity on this machine; skipping");
            return;
        }
        let written = LocalHost::new()
            .fields()
            .into_iter()
            .find(|(key, _)| key == "timens")
            .map(|(_, value)| value);
        match std::fs::read_link("/proc/self/ns/time") {
            Ok(link) => {
                let inode = namespace_inode(&link, "time");
                assert!(inode.is_some(), "{link:?}");
                assert_eq!(written, inode);
                assert_eq!(ours.timens, TimeNamespace::Inode(inode.unwrap_or_default()));
            }
            Err(_) => {
                assert_eq!(written, None);
                assert_eq!(ours.timens, TimeNamespace::NoneOnThisKernel);
            }
        }
    }

    #[test]
    fn a_gone_holder_of_another_time_namespace_is_not_judged_dead() {
        let probe = LocalHost::new();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap(); // reaped: the pid names nothing now
        let mut record = LockRecord::for_this_process(SystemTime::now());
        record.pid = gone;
        record.fields = probe.fields();
        if record.field("timens").is_none() || record.field("start").is_none() {
            eprintln!("no time namespace or /proc identity here; skipping");
            return;
        }
        let judged_at_home = probe.holder_is_dead(&record);
        for (key, value) in &mut record.fields {
            if key == "timens" {
                value.push('0'); // another namespace's inode
            }
        }
        assert!(!probe.holder_is_dead(&record), "another time namespace");
        assert!(
            probe.watch_exit(&record).is_none(),
            "another time namespace"
        );
        record.fields.retain(|(key, _)| key != "timens");
        assert!(!probe.holder_is_dead(&record), "no time namespace stated");
        assert!(
            probe.watch_exit(&record).is_none(),
            "no time namespace stated"
        );
        // Not vacuous: in our own namespaces the gone pid is judged dead (as
        // is a pid taken again meanwhile: another start time).
        assert!(judged_at_home, "a gone pid of our own namespaces is dead");
    }
}
