//! Signals through the built `heldlock` binary: a terminal's Ctrl-C reaches
//! the command once (a pseudo-terminal stands for the terminal), and
//! signals sent to heldlock with kill(2) reach the command while heldlock
//! survives them and exits with the command's status.
//!
//! When a pseudo-terminal cannot be had, the terminal test prints
//! `SKIPPED <test>: <reason>` to stderr and passes, unless
//! `HELDLOCK_REQUIRE_ALL_TESTS=1` (set by CI) makes it fail.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rustix::fs::OFlags;
use rustix::process::Signal;
use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};

/// How long a second, unwanted delivery of a signal is given to show up
/// before its absence is believed. The one fixed wait of these tests: an
/// absence cannot be polled for.
const SETTLE: Duration = Duration::from_millis(500);

/// The lines the command recorded so far.
fn recorded(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A visible skip (and a failure under `HELDLOCK_REQUIRE_ALL_TESTS=1`),
/// counted in `HELDLOCK_SKIP_LOG` like every other suite's.
use heldlock_testkit::skip;

/// A pseudo-terminal: the master end (what a terminal emulator holds) and
/// the slave end (what the programs in it use).
struct Pty {
    master: File,
    slave: File,
}

impl Pty {
    fn open() -> std::io::Result<Pty> {
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY)?;
        grantpt(&master)?;
        unlockpt(&master)?;
        let name = ptsname(&master, Vec::new())?;
        let slave = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(i32::try_from(OFlags::NOCTTY.bits()).unwrap())
            .open(name.to_str().map_err(std::io::Error::other)?)?;
        Ok(Pty {
            master: File::from(master),
            slave,
        })
    }
}

/// The script of a command that records each delivery of the signals named
/// in `traps` as a line in `got`, says `ready` once its traps are set, and
/// runs until `done` exists, then exits with `code`.
fn recorder(traps: &[&str], code: u8) -> String {
    let mut script = String::new();
    for name in traps {
        script.push_str(&format!("trap 'echo {name} >> got' {name}; "));
    }
    script.push_str(&format!(
        ": > ready; while [ ! -e done ]; do sleep 0.05; done; exit {code}"
    ));
    script
}

/// A command that records each delivery of SIGINT and SIGQUIT as a line in
/// `got`, says `ready` once its handlers are set, and runs until `done`
/// exists. Perl rather than `sh`: a shell runs a trap only once its
/// foreground child (`sleep`) has ended, by which time a second SIGINT
/// would have merged with the first, hiding the duplicate this test looks
/// for; perl's handler runs as soon as its `select` is interrupted.
const PERL_RECORDER: &str = r#"
sub record { open(my $f, ">>", "got") or die; print $f "$_[0]\n"; close($f); }
$SIG{INT} = sub { record("INT") };
$SIG{QUIT} = sub { record("QUIT") };
open(my $r, ">", "ready") or die; close($r);
until (-e "done") { select(undef, undef, undef, 0.05); }
exit 0;
"#;

/// Ctrl-C and Ctrl-\ on a terminal: the terminal sends SIGINT (SIGQUIT) to
/// the whole foreground process group, heldlock and its command alike;
/// heldlock must not send it a second time.
#[test]
fn a_terminal_interrupt_reaches_the_command_once() {
    const TEST: &str = "a_terminal_interrupt_reaches_the_command_once";
    let pty = match Pty::open() {
        Ok(pty) => pty,
        Err(error) => return skip(TEST, &format!("no pseudo-terminal: {error}")),
    };
    for tool in ["setsid", "perl"] {
        match Command::new(tool).arg("--version").output() {
            Ok(output) if output.status.success() => {}
            other => return skip(TEST, &format!("cannot run `{tool} --version`: {other:?}")),
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let got = dir.path().join("got");
    // `setsid -c`: a new session whose controlling terminal is the
    // pseudo-terminal on stdin; heldlock leads its foreground group, and
    // the command (with its `sleep`s) is in it.
    let mut child = Command::new("setsid")
        .arg("-c")
        .arg(env!("CARGO_BIN_EXE_heldlock"))
        .args(["run", "l.lock", "--", "perl", "-e", PERL_RECORDER])
        .current_dir(dir.path())
        .stdin(pty.slave.try_clone().unwrap())
        .stdout(pty.slave.try_clone().unwrap())
        .stderr(pty.slave.try_clone().unwrap())
        .spawn()
        .unwrap();
    let Pty { mut master, slave } = pty;
    drop(slave);
    // Drain what the programs print, so that they never block on a full
    // terminal; kept for the failure messages.
    let mut reader = master.try_clone().unwrap();
    let printed = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buffer = [0_u8; 1024];
        // EIO once the last program using the terminal has closed it.
        while let Ok(n @ 1..) = reader.read(&mut buffer) {
            all.extend_from_slice(&buffer[..n]);
        }
        String::from_utf8_lossy(&all).into_owned()
    });

    wait_for("the command to set its traps", || {
        dir.path().join("ready").exists()
    });
    // Ctrl-C.
    master.write_all(b"\x03").unwrap();
    wait_for("the command to record SIGINT", || {
        !recorded(&got).is_empty()
    });
    std::thread::sleep(SETTLE);
    // Ctrl-\.
    master.write_all(b"\x1c").unwrap();
    wait_for("the command to record SIGQUIT", || {
        recorded(&got).len() >= 2
    });
    std::thread::sleep(SETTLE);
    File::create(dir.path().join("done")).unwrap();
    let status = wait_exit(&mut child);
    drop(master);
    let printed = printed.join().unwrap();
    assert_eq!(
        recorded(&got),
        ["INT", "QUIT"],
        "each key must reach the command once; the terminal showed: {printed}"
    );
    assert_eq!(status.code(), Some(0), "the terminal showed: {printed}");
    assert!(
        !dir.path().join("l.lock").exists(),
        "the lock was not released"
    );
}

/// Signals sent with kill(2) to heldlock alone reach the command, whatever
/// their default action (SIGUSR1 ends a process, SIGWINCH is ignored);
/// heldlock survives them and exits with the command's status.
#[test]
fn signals_sent_to_heldlock_reach_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let got = dir.path().join("got");
    let mut child = Command::new(env!("CARGO_BIN_EXE_heldlock"))
        .args(["run", "l.lock", "--", "sh", "-c"])
        .arg(recorder(&["USR1", "WINCH", "USR2", "HUP"], 7))
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the command to set its traps", || {
        dir.path().join("ready").exists()
    });
    let sent = [
        (Signal::USR1, "USR1"),
        (Signal::WINCH, "WINCH"),
        (Signal::USR2, "USR2"),
        (Signal::HUP, "HUP"),
    ];
    for (count, (number, name)) in sent.iter().enumerate() {
        signal(&child, *number);
        wait_for(&format!("the command to record SIG{name}"), || {
            recorded(&got).len() > count
        });
    }
    std::thread::sleep(SETTLE);
    File::create(dir.path().join("done")).unwrap();
    let status = wait_exit(&mut child);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(7), "the command's status; {stderr}");
    assert_eq!(recorded(&got), ["USR1", "WINCH", "USR2", "HUP"], "{stderr}");
    assert!(stderr.is_empty(), "heldlock complained: {stderr}");
    assert!(
        !dir.path().join("l.lock").exists(),
        "the lock was not released"
    );
}

/// SIGTSTP sent to heldlock stops the command and heldlock (so that a
/// shell sees the job stopped); SIGCONT sent to heldlock resumes both.
#[test]
fn a_stop_sent_to_heldlock_stops_both_and_cont_resumes_them() {
    if !Path::new("/proc/self/stat").exists() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_heldlock"))
        .args(["run", "l.lock", "--", "sh", "-c"])
        .arg(": > ready; while [ ! -e done ]; do sleep 0.05; done; exit 5")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the command to start", || dir.path().join("ready").exists());
    signal(&child, Signal::TSTP);
    wait_for("heldlock to stop", || state(child.id()) == Some('T'));
    signal(&child, Signal::CONT);
    wait_for("heldlock to resume", || state(child.id()) != Some('T'));
    File::create(dir.path().join("done")).unwrap();
    assert_eq!(wait_exit(&mut child).code(), Some(5));
}

/// The state letter of process `pid` (`R`, `S`, `T`...), from /proc.
fn state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) S ...`; comm may hold spaces and parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

/// Runs `heldlock run <lock> -- <command...>` on a pseudo-terminal in `dir`
/// and returns what the terminal showed; `None` where no pty can be made.
fn on_a_terminal(dir: &Path, args: &[&str]) -> Option<String> {
    let pty = Pty::open().ok()?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_heldlock"))
        .args(args)
        .current_dir(dir)
        .stdin(pty.slave.try_clone().ok()?)
        .stdout(pty.slave.try_clone().ok()?)
        .stderr(pty.slave.try_clone().ok()?)
        .spawn()
        .ok()?;
    let Pty { master, slave } = pty;
    drop(slave);
    let mut reader = master;
    let printed = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buffer = [0_u8; 1024];
        while let Ok(n @ 1..) = reader.read(&mut buffer) {
            all.extend_from_slice(&buffer[..n]);
        }
        String::from_utf8_lossy(&all).into_owned()
    });
    let status = wait_exit(&mut child);
    assert!(status.success(), "{status}");
    printed.join().ok()
}

/// The waiting spinner appears only once a wait has lasted about 200 ms: a
/// free lock shows none; a lock busy for a second shows it.
#[test]
fn the_spinner_waits_before_it_appears() {
    const TEST: &str = "the_spinner_waits_before_it_appears";
    let dir = tempfile::tempdir().unwrap();
    let Some(free) = on_a_terminal(dir.path(), &["run", "l.lock", "--", "true"]) else {
        return skip(TEST, "no pseudo-terminal");
    };
    assert!(
        !free.contains("waiting for"),
        "a free lock showed: {free:?}"
    );
    // Real time is what is tested: held for a second, five times the delay.
    let mut holder = Command::new(env!("CARGO_BIN_EXE_heldlock"))
        .args(["run", "l.lock", "--", "sh", "-c", ": > held; sleep 1"])
        .current_dir(dir.path())
        .spawn()
        .unwrap();
    wait_for("the holder", || dir.path().join("held").exists());
    let busy = on_a_terminal(dir.path(), &["run", "l.lock", "--", "true"]).unwrap_or_default();
    assert!(busy.contains("waiting for"), "a busy lock showed: {busy:?}");
    assert!(wait_exit(&mut holder).success());
}
