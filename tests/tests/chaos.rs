//! Bounded runs of `heldlock-chaos` (the full run is
//! `cargo run -p heldlock-tests --bin heldlock-chaos -- --processes 4 --seconds 30`,
//! or `cargo xtask chaos --cli --minutes 5` for the `heldlock run` command).
//!
//! Each test runs the driver as a child process and checks its exit status
//! and its summary line; the driver itself checks the exact account of
//! increments, the takeovers, the lock and the trash (see its module docs).
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

const CHAOS: &str = env!("CARGO_BIN_EXE_heldlock-chaos");

fn run(args: &[&str]) -> Output {
    let output = Command::new(CHAOS).args(args).output().unwrap();
    // Shown on failure (and with --nocapture): the driver's whole report.
    println!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    output
}

/// The `key=value` fields of the line starting with `tag`.
fn summary(output: &Output, tag: &str) -> HashMap<String, String> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with(tag))
        .unwrap_or_else(|| panic!("no {tag} line in:\n{stdout}"));
    line.split(' ')
        .filter_map(|field| field.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn number(fields: &HashMap<String, String>, key: &str) -> u64 {
    fields[key].parse().unwrap()
}

fn bounded_run(extra: &[&str]) -> HashMap<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let mut args = vec![
        "--processes",
        "4",
        "--seconds",
        "5",
        "--stale-ms",
        "1000",
        "--seed",
        "20261127",
        // A loaded CI machine may schedule a resumed process late.
        "--takeover-slack-ms",
        "4000",
        "--dir",
        run_dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let output = run(&args);
    assert!(output.status.success(), "the chaos run failed");
    let fields = summary(&output, "chaos-summary");
    // The driver forces at least one kill and one pause of a holder.
    assert!(number(&fields, "kills") >= 1);
    assert!(number(&fields, "holder_kills") >= 1);
    assert!(number(&fields, "pauses") >= 1);
    assert!(number(&fields, "holder_pauses") >= 1);
    assert!(number(&fields, "increments") > 0);
    assert_eq!(fields["counter"], fields["increments"]);
    assert_eq!(
        number(&fields, "increments"),
        number(&fields, "logged") + number(&fields, "unlogged_after_kill")
    );
    assert_eq!(fields["takeovers"], fields["holder_kills"]);
    assert_eq!(fields["lock_free"], "true");
    assert_eq!(fields["trash_unexplained"], "0");
    assert_eq!(fields["problems"], "0");
    fields
}

#[test]
fn chaos_with_file_lock_loses_and_doubles_nothing() {
    let fields = bounded_run(&[]);
    // A same-host waiter sees the killed holder die and breaks at once.
    assert!(number(&fields, "longest_takeover_ms") < 1000 + 4000);
}

#[test]
fn chaos_with_the_bare_lease_loses_and_doubles_nothing() {
    let fields = bounded_run(&["--lease-only"]);
    // Without the liveness probe the killed holder's lock must go stale
    // first; killed right after a heartbeat it needs about `stale`.
    assert!(number(&fields, "longest_takeover_ms") >= 1000 - 334);
}

/// The `heldlock run` mode: kills of the wrapper, the command or both, and
/// pauses of either. `heldlock` is another package's binary, so it is not in
/// `CARGO_BIN_EXE_*`: `cargo test --workspace` builds it beside
/// `heldlock-chaos` (or `cargo build -p heldlock-cli`); without it the test
/// is skipped.
#[test]
fn chaos_through_the_cli_loses_and_doubles_nothing() {
    let heldlock = Path::new(CHAOS).with_file_name("heldlock");
    if !heldlock.is_file() {
        support::skip(
            "chaos_through_the_cli_loses_and_doubles_nothing",
            &format!(
                "no heldlock binary at {} (build it: cargo build -p heldlock-cli)",
                heldlock.display()
            ),
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let output = run(&[
        "--cli",
        "--heldlock",
        heldlock.to_str().unwrap(),
        "--processes",
        "4",
        "--seconds",
        "6",
        "--stale-ms",
        "600",
        "--seed",
        "20261206",
        "--dir",
        run_dir.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "the CLI chaos run failed");
    let fields = summary(&output, "cli-chaos-summary");
    // The driver forces each kind of kill and pause at least once, and a
    // wrapper kill that leaves its command holding the lock past `stale`.
    for key in [
        "kills_wrapper",
        "kills_command",
        "kills_both",
        "pauses_wrapper",
        "pauses_command",
        "orphans_past_stale",
        "increments",
    ] {
        assert!(number(&fields, key) >= 1, "{key}");
    }
    assert_eq!(fields["counter"], fields["increments"]);
    assert_eq!(
        number(&fields, "increments"),
        number(&fields, "logged") + number(&fields, "unlogged_after_kill")
    );
    for key in [
        "lost",
        "doubled",
        "not_ours",
        "wrapper_failures",
        "files_left",
        "processes_left",
        "problems",
    ] {
        assert_eq!(fields[key], "0", "{key}");
    }
}

#[test]
fn a_paused_holder_keeps_its_lock_on_its_host_and_elsewhere_skips_its_write() {
    for kind in [&[][..], &["--lease-only"][..]] {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path().join("run");
        let mut args = vec![
            "--long-pause",
            "--stale-ms",
            "1000",
            "--dir",
            run_dir.to_str().unwrap(),
        ];
        args.extend_from_slice(kind);
        let output = run(&args);
        assert!(output.status.success(), "the long-pause run failed");
        let fields = summary(&output, "long-pause-summary");
        assert!(number(&fields, "paused_ms") > 1000);
        if kind.is_empty() {
            // FileLock on one host: the stopped holder's kernel lock is
            // proof of life, so its peer waited instead of taking over.
            assert_eq!(fields["kept"], "true");
            assert_eq!(fields["counter"], fields["commits"]);
            assert_eq!(fields["lock_free"], "true");
            assert_eq!(fields["trash"], "0");
            assert_eq!(fields["problems"], "0");
            continue;
        }
        // The peer could only take over once the lock, last stamped before
        // the SIGSTOP, was older than `stale`.
        assert!(number(&fields, "takeover_ms") >= 1000 - 334);
        assert_eq!(fields["skipped"], "true", "refresh() reported the loss");
        assert_eq!(fields["counter"], "2", "the skipped write was redone");
        assert_eq!(fields["commits"], "2");
        assert_eq!(fields["lock_free"], "true");
        assert_eq!(fields["trash"], "0");
        assert_eq!(fields["problems"], "0");
    }
}

#[test]
fn the_driver_refuses_bad_flags_with_usage() {
    for args in [
        &["--processes", "0"][..],
        &["--bogus"],
        &["--seconds", "soon"],
        &["--max-pause-ms", "900", "--stale-ms", "1000"],
        &["--poll-ms"],
        &["--cli", "--lease-only"],
        &["--linger-one-in", "3"],
    ] {
        let output = Command::new(CHAOS).args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("usage: heldlock-chaos"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn the_driver_refuses_a_directory_that_is_not_empty() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("precious"), b"keep me").unwrap();
    let output = Command::new(CHAOS)
        .args(["--seconds", "1", "--dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        std::fs::read(dir.path().join("precious")).unwrap(),
        b"keep me"
    );
}

#[test]
fn the_cli_mode_says_when_there_is_no_heldlock_binary() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-heldlock");
    let output = Command::new(CHAOS)
        .args(["--cli", "--seconds", "1", "--heldlock"])
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no heldlock binary at"), "{stderr}");
    assert!(stderr.contains("cargo build -p heldlock-cli"), "{stderr}");
}
