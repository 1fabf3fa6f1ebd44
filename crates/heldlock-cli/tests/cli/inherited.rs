//! What `heldlock run` passes on from its caller, as flock(1) does: signals
//! the caller ignores stay ignored (`nohup`, a shell's `trap ''`), for the
//! wait and for the command, and an ignored SIGCHLD does not cost the
//! command's exit status.

use crate::common::*;
use crate::fixtures::lock_in;

/// The `SigIgn` mask of the command run under the lock, as `sh -c SCRIPT`
/// sets up heldlock's own dispositions before it `exec`s it.
fn ignored_by_the_command(setup: &str) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let lock = lock_in(&dir);
    let heldlock = env!("CARGO_BIN_EXE_heldlock");
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            r#"{setup}; exec "$0" run "$1" -- sh -c 'grep SigIgn /proc/self/status'"#
        ))
        .arg(heldlock)
        .arg(&lock)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let line = stdout(&output);
    let mask = line.trim().trim_start_matches("SigIgn:").trim();
    u64::from_str_radix(mask, 16).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

/// The `SigIgn` mask of this test process (what the runner left ignored).
fn ignored_here() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("SigIgn:"))
        .unwrap();
    u64::from_str_radix(line.trim(), 16).unwrap()
}

#[test]
fn signals_the_caller_ignores_stay_ignored_for_the_command() {
    // SIGHUP is signal 1 (bit 0), SIGINT 2 (bit 1), SIGTERM 15 (bit 14).
    let (hup, int, term) = (1 << 0, 1 << 1, 1 << 14);
    let ignored = ignored_by_the_command("trap '' HUP INT");
    assert_eq!(
        ignored & (hup | int),
        hup | int,
        "ignored by the caller, caught by heldlock, default for the command: {ignored:#x}"
    );
    // Nor does heldlock make ignored what its caller did not ignore: the
    // command ignores what this test process does (`sh` passes it on).
    let mask = hup | int | term;
    assert_eq!(ignored_by_the_command("true") & mask, ignored_here() & mask);
}

#[test]
fn an_ignored_sigchld_does_not_cost_the_command_its_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let lock = lock_in(&dir);
    // dash's `trap '' CHLD` leaves SIGCHLD alone; perl (perl-base is
    // essential on Debian) ignores it and `exec`s with it ignored.
    let output = std::process::Command::new("perl")
        .args([
            "-e",
            r#"$SIG{CHLD} = "IGNORE"; exec @ARGV or die "exec: $!""#,
        ])
        .arg(env!("CARGO_BIN_EXE_heldlock"))
        .arg("run")
        .arg(&lock)
        .args(["--", "sh", "-c", "exit 5"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
    assert!(!lock.exists(), "the lock was left behind");
}
