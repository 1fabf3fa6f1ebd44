//! Pid verdicts across namespaces: a holder and a contender that do not
//! share a pid namespace or a time namespace never judge each other by pid,
//! while two processes that share them (even a non-initial time namespace)
//! still do.
//!
//! The processes in other namespaces are this test binary run again in one
//! role (`namespace_helper_role`), under `unshare`. Creating a namespace
//! needs privileges: when it fails, a test prints `SKIPPED <test>: <reason>`
//! to stderr and passes, unless `HELDLOCK_REQUIRE_ALL_TESTS=1` (or the
//! older `HELDLOCK_REQUIRE_NAMESPACES=1`) makes it fail. Nothing here touches the file system beyond `/proc`.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use heldlock_core::{HostProbe, LockRecord};
use heldlock_fs::LocalHost;

mod support;

/// The helper's role; unset in a normal test run.
const ROLE: &str = "HELDLOCK_NS_HELPER_ROLE";
/// The record a judging helper judges, as [`encode`] writes it.
const RECORD: &str = "HELDLOCK_NS_HELPER_RECORD";
const HOLDER_LINE: &str = "HELDLOCK-HOLDER ";
const VERDICT_LINE: &str = "HELDLOCK-VERDICT ";

/// A time namespace whose boot clock is 100000 s ahead of ours: a start
/// time read through it is 100000 s later than one read through ours.
const SHIFTED_TIME: &[&str] = &["--time", "--boottime", "100000"];
/// A pid namespace with its own `/proc`; `--kill-child` takes the helper
/// down with `unshare` if this test dies.
const OWN_PIDS: &[&str] = &["--pid", "--fork", "--mount-proc", "--kill-child"];

/// How long a helper may take to say something on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(30);

/// Whether `unshare <args>` can run a process here; otherwise says why the
/// test is skipped (or fails it, when namespaces are required).
fn namespaces_available(test: &str, args: &[&str]) -> bool {
    let reason = match Command::new("unshare")
        .args(args)
        .args(["--", "true"])
        .stdin(Stdio::null())
        .output()
    {
        Ok(output) if output.status.success() => return identity_available(test),
        Ok(output) => format!(
            "`unshare {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(e) => format!("cannot run `unshare`: {e}"),
    };
    skip(test, &reason)
}

/// Whether this process writes the fields that pid verdicts need.
fn identity_available(test: &str) -> bool {
    let fields = LocalHost::new().fields();
    let has = |key: &str| fields.iter().any(|(k, _)| k == key);
    // `timens` is not among them: a kernel without time namespaces has none,
    // and there `unshare --time` fails first.
    if ["host", "boot", "pidns", "start"]
        .iter()
        .all(|key| has(key))
    {
        true
    } else {
        skip(test, &format!("no full /proc identity here: {fields:?}"))
    }
}

/// A skip, made visible by [`support::skip_unless_required`]: it fails
/// under `HELDLOCK_REQUIRE_ALL_TESTS=1` and, as before, under
/// `HELDLOCK_REQUIRE_NAMESPACES=1`.
fn skip(test: &str, reason: &str) -> bool {
    support::skip_unless_required(test, reason, &["HELDLOCK_REQUIRE_NAMESPACES"]);
    false
}

/// This test binary, run as `role` under `unshare <unshare>` (directly when
/// `unshare` is empty).
fn helper(role: &str, unshare: &[&str]) -> Command {
    let exe = std::env::current_exe().unwrap();
    let harness = [
        "namespace_helper_role",
        "--exact",
        "--nocapture",
        "--test-threads",
        "1",
        "--quiet",
    ];
    let mut command = if unshare.is_empty() {
        Command::new(exe)
    } else {
        let mut command = Command::new("unshare");
        command.args(unshare).arg("--").arg(exe);
        command
    };
    command.args(harness).env(ROLE, role);
    command
}

/// `<pid> <key>=<value>...`: all a verdict needs of a record.
fn encode(pid: u32, fields: &[(String, String)]) -> String {
    let mut line = pid.to_string();
    for (key, value) in fields {
        line.push_str(&format!(" {key}={value}"));
    }
    line
}

fn decode(line: &str) -> LockRecord {
    let mut words = line.split_whitespace();
    let mut record = LockRecord::for_this_process(SystemTime::now());
    record.pid = words.next().unwrap().parse().unwrap();
    record.fields = words
        .map(|word| {
            let (key, value) = word.split_once('=').unwrap();
            (key.to_owned(), value.to_owned())
        })
        .collect();
    record
}

/// The first line of `child`'s output that starts with `marker`, without
/// the marker; panics if the child ends or says nothing of it in time.
fn read_marked(output: &mut impl BufRead, marker: &str) -> String {
    let started = Instant::now();
    let mut line = String::new();
    loop {
        line.clear();
        let read = output.read_line(&mut line).unwrap();
        assert!(read > 0, "the helper ended without a {marker:?} line");
        if let Some(rest) = line.strip_prefix(marker) {
            return rest.trim_end().to_owned();
        }
        assert!(started.elapsed() < DEADLINE, "no {marker:?} line in time");
    }
}

/// A helper holding "a lock": it states its record and lives until its
/// standard input closes.
struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Kept open to the end: the helper's test harness reports after the
    /// record, and fails on a closed pipe.
    stdout: BufReader<ChildStdout>,
    record: LockRecord,
}

impl Holder {
    fn start(unshare: &[&str]) -> Holder {
        let mut child = helper("hold", unshare)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let record = decode(&read_marked(&mut stdout, HOLDER_LINE));
        Holder {
            child,
            stdin,
            stdout,
            record,
        }
    }

    /// Lets the holder end, and reaps it: its pid then names no process.
    fn end(mut self) {
        drop(self.stdin.take());
        let mut rest = Vec::new();
        self.stdout.read_to_end(&mut rest).unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the holder failed: {status}");
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        if self.stdin.take().is_some() {
            // Ended by a failing test: do not leave it running.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a contender in a helper decided about `record`.
#[derive(Debug, PartialEq, Eq)]
struct Verdict {
    dead: bool,
    watched: bool,
    shares_host: bool,
}

fn parse_verdict(line: &str) -> Verdict {
    let flag = |name: &str| {
        line.split_whitespace()
            .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
            == "true"
    };
    Verdict {
        dead: flag("dead"),
        watched: flag("watched"),
        shares_host: flag("shares_host"),
    }
}

fn verdict_line(record: &LockRecord) -> String {
    let probe = LocalHost::new();
    let watched = probe.watch_exit(record).is_some();
    format!(
        "{VERDICT_LINE}dead={} watched={watched} shares_host={}",
        probe.holder_is_dead(record),
        probe.shares_host(record)
    )
}

fn verdict_here(record: &LockRecord) -> Verdict {
    parse_verdict(verdict_line(record).strip_prefix(VERDICT_LINE).unwrap())
}

/// The verdict of a contender run under `unshare <unshare>` on `record`.
fn verdict_in(unshare: &[&str], record: &LockRecord) -> Verdict {
    let output = helper("judge", unshare)
        .env(RECORD, encode(record.pid, &record.fields))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "the judge failed: {output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    parse_verdict(&read_marked(&mut stdout.as_bytes(), VERDICT_LINE))
}

/// A copy of `record` naming `pid` instead.
fn with_pid(record: &LockRecord, pid: u32) -> LockRecord {
    let mut record = record.clone();
    record.pid = pid;
    record
}

/// A pid that surely runs no process now: a child that was reaped.
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

/// Not a test: the roles this binary plays when run again by the tests.
#[test]
fn namespace_helper_role() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let mut out = std::io::stdout();
    match role.as_str() {
        "hold" => {
            let line = encode(std::process::id(), &LocalHost::new().fields());
            writeln!(out, "{HOLDER_LINE}{line}").unwrap();
            out.flush().unwrap();
            // Alive until the test lets go of our standard input.
            std::io::copy(&mut std::io::stdin(), &mut std::io::sink()).unwrap();
        }
        "judge" => {
            let record = decode(&std::env::var(RECORD).unwrap());
            writeln!(out, "{}", verdict_line(&record)).unwrap();
        }
        "judge-own-child" => {
            // A holder that shares all our namespaces, whichever they are.
            let holder = Holder::start(&[]);
            let record = holder.record.clone();
            writeln!(out, "{}", verdict_line(&record)).unwrap();
            holder.end();
            writeln!(out, "{}", verdict_line(&record)).unwrap();
        }
        other => panic!("unknown helper role {other:?}"),
    }
    out.flush().unwrap();
}

#[test]
fn a_contender_in_another_time_namespace_never_judges_by_pid() {
    let test = "a_contender_in_another_time_namespace_never_judges_by_pid";
    if !namespaces_available(test, SHIFTED_TIME) {
        return;
    }
    let holder = Holder::start(&[]);
    let alive = holder.record.clone();
    let gone = with_pid(&alive, dead_pid());
    // In our own namespaces the helper judges by pid: the checks below are
    // not vacuous.
    assert_eq!(
        verdict_in(&[], &alive),
        Verdict {
            dead: false,
            watched: true,
            shares_host: true
        }
    );
    assert!(verdict_in(&[], &gone).dead, "a gone pid, judged at home");
    // Through a boot clock 100000 s ahead, the holder's start time reads
    // differently: judged by pid, it would be a reused pid, hence dead.
    let not_by_pid = Verdict {
        dead: false,
        watched: false,
        shares_host: true,
    };
    assert_eq!(verdict_in(SHIFTED_TIME, &alive), not_by_pid, "alive");
    assert_eq!(verdict_in(SHIFTED_TIME, &gone), not_by_pid, "gone");
    holder.end();
}

#[test]
fn a_holder_in_another_time_namespace_is_never_judged_by_pid() {
    let test = "a_holder_in_another_time_namespace_is_never_judged_by_pid";
    if !namespaces_available(test, SHIFTED_TIME) {
        return;
    }
    let holder = Holder::start(SHIFTED_TIME);
    let record = holder.record.clone();
    let ours = LocalHost::new().fields();
    let timens = |fields: &[(String, String)]| {
        fields
            .iter()
            .find(|(key, _)| key == "timens")
            .map(|(_, value)| value.clone())
    };
    assert!(timens(&record.fields).is_some(), "{record:?}");
    assert_ne!(timens(&record.fields), timens(&ours));
    let not_by_pid = Verdict {
        dead: false,
        watched: false,
        shares_host: true,
    };
    assert_eq!(verdict_here(&record), not_by_pid, "alive");
    holder.end();
    assert_eq!(verdict_here(&record), not_by_pid, "gone");
}

#[test]
fn a_shared_time_namespace_still_gets_pid_verdicts() {
    let test = "a_shared_time_namespace_still_gets_pid_verdicts";
    if !namespaces_available(test, SHIFTED_TIME) {
        return;
    }
    let output = helper("judge-own-child", SHIFTED_TIME)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "the helper failed: {output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut lines = stdout.as_bytes();
    let alive = parse_verdict(&read_marked(&mut lines, VERDICT_LINE));
    let gone = parse_verdict(&read_marked(&mut lines, VERDICT_LINE));
    assert_eq!(
        alive,
        Verdict {
            dead: false,
            watched: true,
            shares_host: true
        }
    );
    assert!(
        gone.dead,
        "a gone holder in our own time namespace: {gone:?}"
    );
}

#[test]
fn a_holder_in_another_pid_namespace_is_never_judged_by_pid() {
    let test = "a_holder_in_another_pid_namespace_is_never_judged_by_pid";
    if !namespaces_available(test, OWN_PIDS) {
        return;
    }
    let holder = Holder::start(OWN_PIDS);
    let record = holder.record.clone();
    // Its pid 1 is our init here, started at another time.
    assert_eq!(record.pid, 1, "{record:?}");
    let not_by_pid = Verdict {
        dead: false,
        watched: false,
        shares_host: true,
    };
    assert_eq!(verdict_here(&record), not_by_pid, "alive");
    assert_eq!(
        verdict_here(&with_pid(&record, dead_pid())),
        not_by_pid,
        "a pid that is gone here"
    );
    holder.end();
}

#[test]
fn a_contender_in_another_pid_namespace_never_judges_by_pid() {
    let test = "a_contender_in_another_pid_namespace_never_judges_by_pid";
    if !namespaces_available(test, OWN_PIDS) {
        return;
    }
    let holder = Holder::start(&[]);
    let alive = holder.record.clone();
    let not_by_pid = Verdict {
        dead: false,
        watched: false,
        shares_host: true,
    };
    // The holder's pid names nothing in a fresh pid namespace.
    assert_eq!(verdict_in(OWN_PIDS, &alive), not_by_pid);
    holder.end();
}
