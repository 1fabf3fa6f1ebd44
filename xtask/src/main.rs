//! `cargo xtask <task>`: the one entry point for CI and measurements.
//!
//! * `ci`: format check, clippy, a check of the library crates off Linux,
//!   the README's test command, the static CLI's smoke run, docs,
//!   cargo-deny.
//! * `bench [serializer|lock|...]`: criterion benchmarks.
//! * `dist`: the `heldlock` command as a static executable
//!   (`target/dist/heldlock`), smoke-tested; see `dist.rs`.
//! * `deny`: cargo-deny (licenses, bans, sources; advisories where RustSec's
//!   database can be fetched), installing it if missing, with a message.
//! * `sim [campaign|replay|serializer|limit] ARGS`: the deterministic simulator
//!   (`heldlock-sim`, release build); see docs/testing.md.
//! * `chaos [--minutes M] [--cli] ARGS`: real processes killed and paused
//!   under the lock (`heldlock-chaos`, release build; with `--cli`, the
//!   `heldlock run` command, also built); see docs/testing.md.
//! * `fuzz TARGET [--seconds N]`: one cargo-fuzz target (`record`,
//!   `schedule`); `fuzz --smoke` runs each briefly, or says why it skipped.
//!   cargo-fuzz is never installed for you; see docs/testing.md.

use std::env;
use std::process::{Command, ExitCode};
use std::time::Instant;

mod dist;
mod fuzz;

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
        Some("dist") => dist::dist(),
        Some("sim") => sim(&args[1..]),
        Some("chaos") => chaos(&args[1..]),
        Some("fuzz") => fuzz::fuzz(&args[1..]),
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
  ci                  fmt --check, clippy -D warnings, cargo check for macOS (the library
                      crates), tests, the static CLI (`dist`), docs, cargo-deny
  bench [NAME...]     criterion benchmarks (serializer, ...); all when no name is given
  dist                the `heldlock` command linked statically (it starts faster) into
                      target/dist/heldlock, and a smoke run of it
  deny                cargo deny check licenses bans sources, and advisories when the
                      advisory database can be fetched (SKIPPED with the reason otherwise)
  sim [CMD] ARGS      the simulator (release build): `sim --contenders 3 --seeds 100000`
                      runs a campaign; `sim replay --seed S [--shrink] ...` replays one
                      seed; `sim serializer --seeds N`; `sim limit releaser-paused` runs
                      a documented limit (an expected failure: exits 1); `sim help` lists
                      the options
  chaos [ARGS]        kill and pause real lock holders: default
                      `--processes 4 --seconds 30`; `--minutes M` for `--seconds M*60`;
                      `--cli` kills and pauses `heldlock run` and its command instead
                      (`chaos --cli --minutes 5`); `chaos --help` lists the options
  fuzz TARGET [--seconds N]
                      run a cargo-fuzz target (record, schedule) for N seconds (default 60);
                      needs cargo-fuzz (`cargo install --locked cargo-fuzz`)
  fuzz --smoke [--seconds N]
                      run every fuzz target N seconds (default 10) from its seed corpus;
                      prints `SKIPPED fuzz smoke: <reason>` where cargo-fuzz cannot run";

fn ci() -> Result<(), String> {
    /// Whether `name` is an executable file in a directory of PATH.
    fn on_path(name: &str) -> bool {
        env::var_os("PATH")
            .is_some_and(|path| env::split_paths(&path).any(|dir| dir.join(name).is_file()))
    }

    /// Installs, with apt-get, the Debian packages of the tools the build
    /// and the tests need that PATH lacks: heldlock-etcd's etcd-client
    /// compiles etcd's .proto files with `protoc`, and heldlock-etcd's tests
    /// start an `etcd` server.
    fn install_missing_tools() -> Result<(), String> {
        let missing: Vec<(&str, &str)> = [
            (
                "protoc",
                "protobuf-compiler",
                "heldlock-etcd's etcd-client compiles etcd's .proto files with it",
            ),
            (
                "etcd",
                "etcd-server",
                "heldlock-etcd's tests start an etcd server on loopback",
            ),
        ]
        .into_iter()
        .filter(|(tool, _, _)| !on_path(tool))
        .map(|(tool, package, why)| {
            println!("xtask: `{tool}` is not on PATH; installing Debian's {package}: {why}");
            (package, tool)
        })
        .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let packages: Vec<&str> = missing.iter().map(|(package, _)| *package).collect();
        if !on_path("apt-get") {
            return Err(format!(
                "CI needs {} on PATH and there is no apt-get to install them; install the \
                 packages {} (or their equivalents) and run again",
                missing
                    .iter()
                    .map(|(_, tool)| format!("`{tool}`"))
                    .collect::<Vec<_>>()
                    .join(" and "),
                packages.join(" ")
            ));
        }
        let apt = |args: &[&str]| -> Result<(), String> {
            let shown = format!("apt-get {}", args.join(" "));
            println!("xtask: $ {shown}");
            let status = Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .map_err(|e| format!("could not start `{shown}`: {e}"))?;
            if status.success() {
                Ok(())
            } else {
                Err(format!(
                    "`{shown}` failed ({status}); install {} yourself (apt-get needs root)",
                    packages.join(" ")
                ))
            }
        };
        apt(&["update", "-qq"])?;
        let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
        install.extend(&packages);
        apt(&install)
    }

    let started = Instant::now();
    // Before the first build: clippy already runs etcd-client's build script.
    install_missing_tools()?;
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
    check_off_linux()?;
    tests_leave_nothing_behind()?;
    // The static `heldlock` the README offers is a build of its own: it is
    // checked to be static and to run.
    dist::dist()?;
    // The safeguard switches are test-only and never in the workspace's
    // build: their checks run in builds of their own.
    cargo(SAFEGUARD_CLIPPY, &[])?;
    cargo(SAFEGUARD_TESTS, &[])?;
    sim_campaigns()?;
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
    if !names.iter().any(|name| name == "lock") && !names.is_empty() {
        return cargo(&args, &[]);
    }
    // The lock bench's goals time whole `heldlock run`s, of both builds:
    // the static one first, since its build leaves the ordinary path
    // linked statically until the ordinary build that follows.
    dist::dist()?;
    cargo(
        &[
            "build",
            "--release",
            "--locked",
            "--package",
            "heldlock-cli",
        ],
        &[],
    )?;
    let target = dist::target_dir();
    let dynamic = target.join("release").join("heldlock");
    let fixed = target.join("dist").join("heldlock");
    cargo(
        &args,
        &[
            ("HELDLOCK_BENCH_CLI", &dynamic.to_string_lossy()),
            ("HELDLOCK_BENCH_CLI_STATIC", &fixed.to_string_lossy()),
        ],
    )
}

fn sim(args: &[String]) -> Result<(), String> {
    let (command, rest) = match args.first().map(String::as_str) {
        Some(command @ ("campaign" | "replay" | "serializer" | "limit" | "help")) => {
            (command, &args[1..])
        }
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
    // `--minutes M` is `--seconds M*60`; the rest goes to the driver as is.
    let mut passed: Vec<String> = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "--minutes" {
            let minutes = rest
                .next()
                .and_then(|m| m.parse::<f64>().ok())
                .filter(|m| m.is_finite() && *m > 0.0)
                .ok_or_else(|| format!("--minutes needs a positive number\n\n{USAGE}"))?;
            passed.extend(["--seconds".to_owned(), format!("{}", minutes * 60.0)]);
        } else {
            passed.push(arg.clone());
        }
    }
    if passed.iter().any(|arg| arg == "--cli") {
        // The driver runs the `heldlock` beside it: the same release build.
        cargo(
            &["build", "--release", "--quiet", "--package", "heldlock-cli"],
            &[],
        )?;
    }
    cargo_args.extend(passed.iter().map(String::as_str));
    cargo(&cargo_args, &[])
}

/// A target without Linux's inotify, pidfd, statx and `/proc`, whose
/// standard library rustup can install: the library crates must build there
/// (`docs/architecture.md`, "Platforms").
const OFF_LINUX_TARGET: &str = "x86_64-apple-darwin";

/// `cargo check` of the library crates for [`OFF_LINUX_TARGET`]. The target's
/// standard library is installed with a message when missing; where it
/// cannot be (no network, no rustup), a `SKIPPED` line says why. The CLI is
/// left out: signal-hook compiles C for it, which needs the target's C
/// toolchain (an Apple SDK), not only Rust's.
fn check_off_linux() -> Result<(), String> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).contains(OFF_LINUX_TARGET));
    let why_not = match installed {
        Ok(true) => None,
        Ok(false) => {
            println!(
                "xtask: installing Rust's standard library for {OFF_LINUX_TARGET} \
                 (`rustup target add {OFF_LINUX_TARGET}`) to check that the crates build \
                 off Linux"
            );
            match Command::new("rustup")
                .args(["target", "add", OFF_LINUX_TARGET])
                .status()
            {
                Ok(status) if status.success() => None,
                Ok(status) => Some(format!("`rustup target add` failed ({status})")),
                Err(e) => Some(format!("could not start rustup: {e}")),
            }
        }
        Err(e) => Some(format!("could not start rustup: {e}")),
    };
    if let Some(why) = why_not {
        println!("SKIPPED cargo check --target {OFF_LINUX_TARGET}: {why}");
        return Ok(());
    }
    let mut args = vec!["check", "--locked", "--target", OFF_LINUX_TARGET];
    for package in [
        "heldlock-core",
        "heldlock-fs",
        "heldlock-tokio",
        "heldlock-smol",
        "heldlock-async-std",
        "heldlock",
        "heldlock-conformance",
    ] {
        args.extend(["--package", package]);
    }
    cargo(&args, &[("RUSTFLAGS", "-D warnings")])
}

/// cargo-deny against deny.toml: licenses, bans and sources always;
/// advisories when RustSec's database can be fetched, and otherwise a
/// `SKIPPED` line that says why and what to run where it can.
fn deny() -> Result<(), String> {
    let runs = |args: &[&str]| {
        Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(args)
            .output()
    };
    if !runs(&["deny", "--version"]).is_ok_and(|out| out.status.success()) {
        println!(
            "xtask: cargo-deny is not installed; installing it from crates.io \
             (`cargo install --locked cargo-deny`, a few minutes of compiling) to check \
             the dependency graph against deny.toml: licenses, bans, sources, advisories"
        );
        cargo(&["install", "--locked", "cargo-deny"], &[])?;
    }
    cargo(&["deny", "check", "licenses", "bans", "sources"], &[])?;
    // The advisory database is a git clone of github.com/rustsec/advisory-db
    // into ~/.cargo/advisory-dbs: fetched apart, so that a machine without
    // the network is told so instead of failing, and a finding still fails.
    println!("xtask: $ cargo deny fetch db");
    match runs(&["deny", "fetch", "db"]) {
        Ok(out) if out.status.success() => {
            cargo(&["deny", "--offline", "check", "advisories"], &[])
        }
        fetched => {
            let why = match fetched {
                Ok(out) => String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .rfind(|line| !line.trim().is_empty())
                    .unwrap_or("no message")
                    .trim()
                    .to_owned(),
                Err(e) => e.to_string(),
            };
            println!(
                "SKIPPED cargo deny check advisories: the RustSec advisory database could not \
                 be fetched ({why}); run `cargo deny check advisories` where github.com is \
                 reachable"
            );
            Ok(())
        }
    }
}

/// Runs the README's test command with a temporary directory (`TMPDIR`)
/// and a runtime directory (`XDG_RUNTIME_DIR`, where waiters queue) of
/// their own, and fails if anything is left in either afterwards: every
/// test cleans up after itself, and the lock protocol leaves nothing behind.
/// (The empty directories themselves are the run's; a private per-user
/// `heldlock-<uid>` directory the queue may keep in `TMPDIR` counts only
/// if something is in it.)
/// The simulator's campaigns that CI runs with a fixed budget, in a
/// release build (about 1,300 schedules/s against 100 in the test suite's
/// debug build): every safeguard on, every fault kind, one host and several.
/// Each must exit 0, known races included.
const SIM_CAMPAIGNS: &[&[&str]] = &[
    &["--contenders", "3", "--seeds", "10000"],
    &["--contenders", "3", "--hosts", "2", "--seeds", "10000"],
    &["--contenders", "4", "--hosts", "2", "--seeds", "3000"],
    // The two-breaker race needs no fault: it must stay closed.
    &[
        "--faults",
        "none",
        "--initial-lock",
        "yes",
        "--hosts",
        "3",
        "--seeds",
        "5000",
    ],
];

fn sim_campaigns() -> Result<(), String> {
    for config in SIM_CAMPAIGNS {
        let mut args = vec![
            "run",
            "--release",
            "--locked",
            "--quiet",
            "--package",
            "heldlock-sim",
            "--bin",
            "heldlock-sim",
            "--",
            "campaign",
        ];
        args.extend_from_slice(config);
        cargo(&args, &[])?;
    }
    Ok(())
}

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
            // The etcd tests skip without an etcd; `ci` made sure of one,
            // so a skip fails them (their own switch, beside the one above).
            ("HELDLOCK_REQUIRE_ETCD", "1"),
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
