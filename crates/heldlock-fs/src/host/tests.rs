//! Same-host liveness: identities, verdicts and namespaces.

use super::*;
use crate::test_support::skip;
use std::time::SystemTime;

/// Whether `/proc` shows this process, asked apart from the code under
/// test.
fn proc_works() -> bool {
    std::fs::read("/proc/self/stat").is_ok()
}

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
        skip(
            "the_identity_is_read_for_our_pid_and_only_where_proc_agrees",
            "no /proc identity on this machine",
        );
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
fn our_stat_names_us_as_proc_self_does_and_the_boot_id_is_read_whole() {
    let Ok(link) = std::fs::read_link("/proc/self") else {
        skip(
            "our_stat_names_us_as_proc_self_does_and_the_boot_id_is_read_whole",
            "no /proc on this machine",
        );
        return;
    };
    let (pid, stat) = read_stat_with_pid("/proc/self/stat").unwrap();
    assert_eq!(Some(pid), link.to_str().and_then(|pid| pid.parse().ok()));
    assert!(stat.start > 0);
    let whole = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok();
    assert_eq!(boot_id().as_deref(), whole.as_deref().map(str::trim));
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
    // Gone, unless taken again meanwhile: `/proc` says which, and the
    // kernel's answer must agree (asked twice, should the pid be taken
    // between the two looks).
    if proc_works() {
        let agrees =
            || no_such_process(pid) != std::path::Path::new(&format!("/proc/{pid}")).exists();
        assert!(
            agrees() || agrees(),
            "pid {pid}: the kernel and /proc disagree"
        );
    } else {
        skip(
            "only_the_kernel_proves_a_pid_gone",
            "no /proc here to tell a gone pid",
        );
    }
    // A process that runs, neither us nor init: not gone.
    let mut running = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let alive = no_such_process(running.id());
    running.kill().unwrap();
    running.wait().unwrap();
    assert!(!alive, "a running child was judged gone");
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
        skip("a_zombie_is_not_running", "no /proc here");
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
        skip(
            "an_unreaped_dead_holder_is_dead_even_once_its_exit_is_watched",
            "no /proc here",
        );
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
        skip(
            "our_own_record_is_alive_and_a_reused_pid_is_dead",
            "no /proc identity on this machine",
        );
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
        skip(
            "we_write_our_time_namespace_when_the_kernel_has_one",
            "no /proc identity on this machine",
        );
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
        skip(
            "a_gone_holder_of_another_time_namespace_is_not_judged_dead",
            "no time namespace or /proc identity here",
        );
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
