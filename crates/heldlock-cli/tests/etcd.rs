//! `heldlock run|status|break etcd://HOST:PORT/NAME` against a real etcd,
//! and `HELDLOCK_TOKEN` on both backends.
//!
//! The etcd comes from `HELDLOCK_ETCD_ENDPOINTS`, else an `etcd` from PATH
//! started on loopback (heldlock-etcd's test helper, shared): without
//! either, each test prints `SKIPPED ...` and passes, unless
//! `HELDLOCK_REQUIRE_ETCD=1` (or `HELDLOCK_REQUIRE_ALL_TESTS=1`) makes it
//! fail. The crate's tests build the binary with its `etcd` feature (see
//! `Cargo.toml`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../../heldlock-etcd/tests/support/mod.rs"]
mod support;

use common::*;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process_group};
use support::{Etcd, unique_key};

/// `etcd://HOST:PORT[,...]/<a key no other test uses>` on `etcd`.
fn etcd_lock(etcd: &Etcd, name: &str) -> String {
    let hosts: Vec<&str> = etcd
        .endpoints()
        .iter()
        .map(|e| e.trim_start_matches("http://").trim_end_matches('/'))
        .collect();
    format!("etcd://{}/{}", hosts.join(","), unique_key(name))
}

/// The one number a command printed.
fn token(output: &Output) -> u64 {
    let out = stdout(output);
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("a token on stdout, got {out:?}; stderr: {}", stderr(output)))
}

fn print_token(lock: &str) -> Output {
    heldlock()
        .args([
            "run",
            "-w",
            "10",
            lock,
            "--",
            "sh",
            "-c",
            r#"echo "$HELDLOCK_TOKEN""#,
        ])
        .output()
        .unwrap()
}

#[test]
fn run_gives_the_command_a_token_that_grows_with_every_run() {
    let Some(etcd) = Etcd::any("run_gives_the_command_a_token_that_grows_with_every_run") else {
        return;
    };
    let lock = etcd_lock(&etcd, "token");
    let first = print_token(&lock);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let second = print_token(&lock);
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    let (a, b) = (token(&first), token(&second));
    assert!(a > 0 && b > a, "tokens {a} then {b}");

    // The command also sees the lock as given and the owner id.
    let output = heldlock()
        .args(["run", &lock, "--", "sh", "-c"])
        .arg(r#"printf '%s\n%s\n' "$HELDLOCK_PATH" "$HELDLOCK_OWNER""#)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let out = stdout(&output);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&lock.as_str()));
    assert_eq!(lines.get(1).map(|owner| owner.len()), Some(36), "{out}");
}

#[test]
fn a_file_lock_gives_no_token_and_hides_an_inherited_one() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("x.lock");
    let output = heldlock()
        .arg("run")
        .arg(&lock)
        .args(["--", "sh", "-c", r#"echo "${HELDLOCK_TOKEN-unset}""#])
        .env("HELDLOCK_TOKEN", "17")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output).trim(), "unset");
}

#[test]
fn with_etcd_stopped_run_n_fails_at_once_saying_what_to_check() {
    // Stops its etcd: one of its own.
    let Some(etcd) = Etcd::own("with_etcd_stopped_run_n_fails_at_once_saying_what_to_check") else {
        return;
    };
    let lock = etcd_lock(&etcd, "stopped");
    drop(etcd);
    let started = Instant::now();
    let output = heldlock()
        .args(["run", "-n", &lock, "--", "echo", "ran"])
        .output()
        .unwrap();
    // 1: an error, not a busy lock (75); within the 5 s connect timeout.
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let err = stderr(&output);
    assert!(
        err.starts_with("heldlock: cannot use the lock etcd://"),
        "{err}"
    );
    assert!(
        err.contains("could not reach etcd") || err.contains("did not answer"),
        "{err}"
    );
    assert!(err.contains("etcdctl"), "says what to check: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(stdout(&output).is_empty(), "the command never ran");

    // --best-effort runs it unlocked, without owner or token.
    let output = heldlock()
        .args(["run", "-n", "--best-effort", &lock, "--", "sh", "-c"])
        .arg(r#"echo "${HELDLOCK_OWNER-none} ${HELDLOCK_TOKEN-none}""#)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output).trim(), "none none");
    assert!(stderr(&output).contains("without the lock"));

    // status cannot tell: 2.
    let output = run(&["status", &lock]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
}

#[test]
fn bad_etcd_locks_are_bad_input() {
    for (lock, says) in [
        ("etcds://127.0.0.1:2379/k", "not supported yet"),
        ("etcd://127.0.0.1:2379/", "NAME is empty"),
        ("etcd://127.0.0.1:http/k", "no valid port"),
    ] {
        for args in [
            &["run", "-n", lock, "--", "true"][..],
            &["status", lock],
            &["break", lock],
        ] {
            let output = run(args);
            assert_eq!(
                output.status.code(),
                Some(64),
                "{args:?}: {}",
                stderr(&output)
            );
            assert!(
                stderr(&output).contains(says),
                "{args:?}: {}",
                stderr(&output)
            );
        }
    }
    // Credentials come in pairs.
    let output = heldlock()
        .args(["status", "--etcd-user", "locker", "etcd://127.0.0.1:1/k"])
        .env_remove("HELDLOCK_ETCD_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64), "{}", stderr(&output));
    assert!(stderr(&output).contains("HELDLOCK_ETCD_PASSWORD"));
}

/// A background `heldlock run` holding `lock` in a process group of its
/// own, once it printed `held`; its group is killed on drop.
struct Holder(Child);

impl Holder {
    fn start(lock: &str, stale: &str) -> Holder {
        let mut child = heldlock()
            .args(["run", "--stale", stale, lock, "--", "sh", "-c"])
            .arg("echo held; exec sleep 60")
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "held", "the holder took the lock");
        Holder(child)
    }

    fn kill_group(&mut self) {
        let group = Pid::from_raw(i32::try_from(self.0.id()).unwrap()).unwrap();
        let _ = kill_process_group(group, Signal::KILL);
        let _ = self.0.wait();
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.kill_group();
    }
}

#[test]
fn status_and_break_see_an_etcd_lock_and_a_killed_holder_is_taken_over_within_its_ttl() {
    const NAME: &str =
        "status_and_break_see_an_etcd_lock_and_a_killed_holder_is_taken_over_within_its_ttl";
    let Some(etcd) = Etcd::any(NAME) else {
        return;
    };
    let lock = etcd_lock(&etcd, "held");
    let output = run(&["status", &lock]);
    assert_eq!(output.status.code(), Some(0), "free: {}", stderr(&output));

    let mut holder = Holder::start(&lock, "2s");
    let output = run(&["status", "--json", &lock]);
    assert_eq!(output.status.code(), Some(1), "held: {}", stderr(&output));
    let json: serde_json::Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    assert_eq!(json["state"], "held");
    assert_eq!(json["stale"], false, "{json}");
    assert_eq!(json["pid"], holder.0.id(), "{json}");
    let output = run(&["status", &lock]);
    assert!(
        stdout(&output).contains("etcd lease"),
        "{}",
        stdout(&output)
    );

    // Never stale: refused without --force.
    let output = run(&["break", &lock]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("etcd lease"),
        "{}",
        stderr(&output)
    );

    // The whole group killed: etcd ends the lease (TTL 2 s after the last
    // keep-alive) and a waiter, woken by the key's deletion, takes over.
    holder.kill_group();
    let killed = Instant::now();
    let output = print_token(&lock);
    let waited = killed.elapsed();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        waited < Duration::from_secs(2 + 3),
        "took over after {waited:?}"
    );

    // --force deletes a live holder's key.
    let _holder = Holder::start(&lock, "30s");
    let output = run(&["break", "--force", "--json", &lock]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let json: serde_json::Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    assert_eq!(json["result"], "broken", "{json}");
    let output = run(&["status", &lock]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "free again: {}",
        stdout(&output)
    );
}

/// The issue's "done when": four processes at once, each running 25
/// read-increment-write cycles of a counter file under the lock; the
/// counter ends at 100, and on etcd the tokens the commands saw, in the
/// order they ran, are strictly increasing.
fn four_by_twenty_five(lock: &str, dir: &std::path::Path) -> Vec<u64> {
    let counter = dir.join("counter");
    let tokens = dir.join("tokens");
    std::fs::write(&counter, "0\n").unwrap();
    std::fs::write(&tokens, "").unwrap();
    let cycle = format!(
        r#"n=$(cat '{c}'); echo $((n + 1)) > '{c}'; echo "${{HELDLOCK_TOKEN-}}" >> '{t}'"#,
        c = counter.display(),
        t = tokens.display()
    );
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (lock, cycle) = (lock.to_owned(), cycle.clone());
            std::thread::spawn(move || {
                for _ in 0..25 {
                    let output = heldlock()
                        .args(["run", "--stale", "5s", "-w", "60", &lock, "-c", &cycle])
                        .output()
                        .unwrap();
                    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    assert_eq!(std::fs::read_to_string(&counter).unwrap().trim(), "100");
    let tokens = std::fs::read_to_string(&tokens).unwrap();
    assert_eq!(tokens.lines().count(), 100);
    tokens
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| line.parse().unwrap())
        .collect()
}

#[test]
fn four_processes_count_to_one_hundred_with_increasing_tokens() {
    let Some(etcd) = Etcd::any("four_processes_count_to_one_hundred_with_increasing_tokens") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tokens = four_by_twenty_five(&etcd_lock(&etcd, "counter"), dir.path());
    assert_eq!(tokens.len(), 100, "every etcd grant has a token");
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "tokens in grant order: {tokens:?}"
    );

    // The same with a lock file: the counter ends at 100, and no token.
    let lock = dir.path().join("counter.lock");
    let tokens = four_by_twenty_five(lock.to_str().unwrap(), dir.path());
    assert!(tokens.is_empty(), "a lock file gives no token: {tokens:?}");
}
