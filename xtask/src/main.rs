//! `cargo xtask <task>`: the one entry point for CI and measurements.
//!
//! * `ci`: format check, clippy, the README's test command, docs, cargo-deny.
//! * `bench [serializer|lock|...]`: criterion benchmarks.
//! * `deny`: cargo-deny (licenses, bans, sources), installing it if missing.
//! * `sim [campaign|replay|serializer] ARGS`: the deterministic simulator
//!   (`heldlock-sim`, release build); see docs/testing.md.
//! * `chaos ARGS`: real processes killed and paused under the lock
//!   (`heldlock-chaos`, release build); see docs/safety.md.
//! * `fuzz TARGET [--seconds N]`: one cargo-fuzz target (`record`,
//!   `schedule`), installing cargo-fuzz if missing; see docs/testing.md.

use std::env;
use std::process::{Command, ExitCode};
use std::time::Instant;

/// The README's test command; CI runs exactly this.
const TEST_COMMAND: &[&str] = &["test", "--workspace", "--locked"];

/// The simulator's safeguard tests, which turn single safeguards of the
/// protocol off through heldlock-fs's test-only switches: built on their own
/// so that the workspace's tests build the heldlock-fs users get.
const SAFEGUARD_TESTS: &[&str] = &[
    "test",
    "--locked",
    "--package",
    "heldlock-sim",
    "--features",
    "safeguard-switches",
    "--test",
    "safeguards",
    "--test",
    "suspect",
];

/// Clippy over the code that only the safeguard build compiles.
const SAFEGUARD_CLIPPY: &[&str] = &[
    "clippy",
    "--locked",
    "--package",
    "heldlock-sim",
    "--package",
    "heldlock-fs",
    "--all-targets",
    "--features",
    "heldlock-sim/safeguard-switches",
    "--",
    "-D",
    "warnings",
];

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("bench") => bench(&args[1..]),
        Some("deny") => deny(),
        Some("sim") => sim(&args[1..]),
        Some("chaos") => chaos(&args[1..]),
        Some("fuzz") => fuzz(&args[1..]),
        Some("help" | "--help" | "-h") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown task `{other}`\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  ci                  fmt --check, clippy -D warnings, tests, docs, cargo-deny
  bench [NAME...]     criterion benchmarks (serializer, ...); all when no name is given
  deny                cargo deny check licenses bans sources
  sim [CMD] ARGS      the simulator (release build): `sim --contenders 3 --seeds 100000`
                      runs a campaign; `sim replay --seed S [--shrink] ...` replays one
                      seed; `sim serializer --seeds N`; `sim help` lists the options
  chaos [ARGS]        kill and pause real lock holders: default
                      `--processes 4 --seconds 30`; `chaos --help` lists the options
  fuzz TARGET [--seconds N]
                      run a cargo-fuzz target (record, schedule) for N seconds (default 60)";

fn ci() -> Result<(), String> {
    let started = Instant::now();
    cargo(&["fmt", "--all", "--check"], &[])?;
    cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    tests_leave_nothing_behind()?;
    // The safeguard switches are test-only and never in the workspace's
    // build: their checks run in builds of their own.
    cargo(SAFEGUARD_CLIPPY, &[])?;
    cargo(SAFEGUARD_TESTS, &[])?;
    cargo(
        &["doc", "--workspace", "--no-deps", "--locked"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    deny()?;
    println!(
        "xtask ci: all checks passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn bench(names: &[String]) -> Result<(), String> {
    let mut args = vec!["bench", "--package", "heldlock-tests", "--locked"];
    for name in names {
        args.push("--bench");
        args.push(name);
    }
    cargo(&args, &[])
}

fn sim(args: &[String]) -> Result<(), String> {
    let (command, rest) = match args.first().map(String::as_str) {
        Some(command @ ("campaign" | "replay" | "serializer" | "help")) => (command, &args[1..]),
        _ => ("campaign", args),
    };
    let mut cargo_args = vec!["run", "--release", "--quiet", "--package", "heldlock-sim"];
    // Only a campaign that turns a safeguard off needs the switches; every
    // other one runs the protocol exactly as users build it.
    if rest.iter().any(|arg| arg == "--safeguard-off") {
        cargo_args.extend(["--features", "safeguard-switches"]);
    }
    cargo_args.extend(["--bin", "heldlock-sim", "--", command]);
    cargo_args.extend(rest.iter().map(String::as_str));
    cargo(&cargo_args, &[])
}

fn chaos(args: &[String]) -> Result<(), String> {
    let mut cargo_args = vec![
        "run",
        "--release",
        "--quiet",
        "--package",
        "heldlock-tests",
        "--bin",
        "heldlock-chaos",
        "--",
    ];
    if args.is_empty() {
        cargo_args.extend(["--processes", "4", "--seconds", "30"]);
    }
    cargo_args.extend(args.iter().map(String::as_str));
    cargo(&cargo_args, &[])
}

fn fuzz(args: &[String]) -> Result<(), String> {
    let (target, rest) = match args.split_first() {
        Some((target, rest)) if !target.starts_with('-') => (target.as_str(), rest),
        _ => {
            return Err(format!(
                "fuzz needs a target: record or schedule\n\n{USAGE}"
            ));
        }
    };
    let seconds = match rest {
        [] => "60".to_owned(),
        [flag, n] if flag == "--seconds" && n.parse::<u64>().is_ok() => n.clone(),
        _ => {
            return Err(format!(
                "fuzz takes `--seconds N` after the target\n\n{USAGE}"
            ));
        }
    };
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !installed {
        cargo(&["install", "--locked", "cargo-fuzz"], &[])?;
    }
    // `-s none`: libFuzzer's coverage guidance without a sanitizer, which
    // works on the stable toolchain (sanitizers need a nightly compiler).
    let max_time = format!("-max_total_time={seconds}");
    let fuzz_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let status = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&fuzz_dir)
        .args(["fuzz", "run", "-s", "none", target, "--", &max_time])
        .status()
        .map_err(|e| format!("could not start cargo fuzz: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "fuzz target `{target}` failed ({status}); see fuzz/artifacts/{target}"
        ))
    }
}

fn deny() -> Result<(), String> {
    let installed = Command::new("cargo")
        .args(["deny", "--version"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !installed {
        cargo(&["install", "--locked", "cargo-deny"], &[])?;
    }
    cargo(&["deny", "check", "licenses", "bans", "sources"], &[])
}

/// Runs the README's test command with a temporary directory (`TMPDIR`)
/// and a runtime directory (`XDG_RUNTIME_DIR`, where waiters queue) of
/// their own, and fails if anything is left in either afterwards: every
/// test cleans up after itself, and the lock protocol leaves nothing behind.
/// (The empty directories themselves are the run's; a private per-user
/// `heldlock-<uid>` directory the queue may keep in `TMPDIR` counts only
/// if something is in it.)
fn tests_leave_nothing_behind() -> Result<(), String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/xtask-test-dirs")
        .join(std::process::id().to_string());
    let (tmp, run) = (root.join("tmp"), root.join("run"));
    for dir in [&tmp, &run] {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    // The runtime directory must be private, as the specification says.
    std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(|e| format!("make {} private: {e}", run.display()))?;
    let (tmp_s, run_s) = (tmp.display().to_string(), run.display().to_string());
    // A test that cannot run here says so (`SKIPPED ...`); CI runs on a
    // machine where every test can run, so there a skip is a failure.
    let tested = cargo(
        TEST_COMMAND,
        &[
            ("TMPDIR", tmp_s.as_str()),
            ("XDG_RUNTIME_DIR", run_s.as_str()),
            ("HELDLOCK_REQUIRE_ALL_TESTS", "1"),
        ],
    );
    let mut left = Vec::new();
    for dir in [&tmp, &run] {
        list_files(dir, &mut left);
    }
    if tested.is_ok() && !left.is_empty() {
        return Err(format!(
            "the tests left {} file(s) behind in their TMPDIR or XDG_RUNTIME_DIR:\n  {}",
            left.len(),
            left.join("\n  ")
        ));
    }
    let _ = std::fs::remove_dir_all(&root);
    tested
}

/// Every file (not directory) under `dir`, as paths, into `out`.
fn list_files(dir: &std::path::Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => list_files(&path, out),
            _ => out.push(path.display().to_string()),
        }
    }
}

fn cargo(args: &[&str], envs: &[(&str, &str)]) -> Result<(), String> {
    let shown = format!("cargo {}", args.join(" "));
    println!("xtask: $ {shown}");
    let started = Instant::now();
    let status = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .envs(envs.iter().copied())
        .status()
        .map_err(|e| format!("could not start `{shown}`: {e}"))?;
    println!(
        "xtask: `{shown}` took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{shown}` failed ({status})"))
    }
}
