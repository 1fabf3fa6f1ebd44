//! `cargo xtask fuzz`: one cargo-fuzz target for a while, or each briefly
//! (`--smoke`), which skips visibly where cargo-fuzz or a C++ compiler is
//! missing: xtask never installs them.

use std::env;
use std::process::Command;

use crate::USAGE;

pub(crate) fn fuzz(args: &[String]) -> Result<(), String> {
    /// The cargo-fuzz targets of fuzz/Cargo.toml.
    const TARGETS: &[&str] = &["record", "schedule"];
    const INSTALL: &str = "cargo install --locked cargo-fuzz";

    /// Whether `program args` runs and succeeds.
    fn runs(program: &str, args: &[&str]) -> bool {
        Command::new(program)
            .args(args)
            .output()
            .is_ok_and(|out| out.status.success())
    }

    let (mut target, mut smoke, mut seconds) = (None, false, None);
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--smoke" => smoke = true,
            "--seconds" => {
                let n = rest.next().and_then(|n| n.parse::<u64>().ok());
                seconds = Some(n.ok_or_else(|| {
                    format!("fuzz: `--seconds` takes a whole number of seconds\n\n{USAGE}")
                })?);
            }
            name if !name.starts_with('-') && target.is_none() => target = Some(name),
            other => return Err(format!("fuzz: unexpected `{other}`\n\n{USAGE}")),
        }
    }
    let targets: Vec<&str> = match target {
        Some(name) if !TARGETS.contains(&name) => {
            return Err(format!(
                "fuzz: no target `{name}`; the targets are {}",
                TARGETS.join(", ")
            ));
        }
        Some(name) => vec![name],
        None if smoke => TARGETS.to_vec(),
        None => {
            return Err(format!(
                "fuzz needs a target ({}) or --smoke\n\n{USAGE}",
                TARGETS.join(", ")
            ));
        }
    };
    let seconds = seconds.unwrap_or(if smoke { 10 } else { 60 });

    // What a run needs; xtask installs none of it. cargo-fuzz builds with
    // `-s none` (libFuzzer's coverage guidance without a sanitizer), which
    // the stable toolchain supports; libfuzzer-sys compiles libFuzzer with
    // a C++ compiler, and libFuzzer runs on Linux and macOS.
    let cargo_bin = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let cxx = env::var("CXX").unwrap_or_else(|_| "c++".into());
    let missing = if !runs(&cargo_bin, &["fuzz", "--version"]) {
        Some(format!(
            "cargo-fuzz is not installed (install it with `{INSTALL}`)"
        ))
    } else if !cfg!(any(target_os = "linux", target_os = "macos")) {
        Some("libFuzzer runs on Linux and macOS only".to_owned())
    } else if !runs(&cxx, &["--version"]) {
        Some(format!(
            "no C++ compiler (`{cxx}`; set CXX) to build libFuzzer with"
        ))
    } else {
        None
    };
    if let Some(reason) = missing {
        if !smoke {
            return Err(format!("fuzz: {reason}; xtask does not install it"));
        }
        let line = format!("SKIPPED fuzz smoke: {reason}");
        // As for the tests' skips (docs/testing.md): counted in
        // HELDLOCK_SKIP_LOG, and a failure where everything must run.
        if env::var("HELDLOCK_REQUIRE_ALL_TESTS").as_deref() == Ok("1") {
            return Err(format!("{line}, but HELDLOCK_REQUIRE_ALL_TESTS=1"));
        }
        println!("{line}");
        if let Some(log) = env::var_os("HELDLOCK_SKIP_LOG") {
            use std::io::Write as _;
            let appended = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .and_then(|mut file| writeln!(file, "{line}"));
            if let Err(e) = appended {
                eprintln!("xtask: could not append to HELDLOCK_SKIP_LOG: {e}");
            }
        }
        return Ok(());
    }

    let fuzz_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    for target in targets {
        // libFuzzer adds what it finds to the first corpus directory. A
        // normal run grows fuzz/corpus/TARGET (git ignores all but the
        // committed seed-* files there); a smoke run starts from those
        // seeds and keeps its finds in a scratch directory.
        let seeds = fuzz_dir.join("corpus").join(target);
        let mut corpora = Vec::new();
        if smoke {
            let scratch = fuzz_dir.join("target/smoke-corpus").join(target);
            // Absent the first time; anything else shows in create_dir_all.
            let _ = std::fs::remove_dir_all(&scratch);
            std::fs::create_dir_all(&scratch)
                .map_err(|e| format!("create {}: {e}", scratch.display()))?;
            corpora.push(scratch);
        }
        corpora.push(seeds);
        let max_time = format!("-max_total_time={seconds}");
        println!("xtask: fuzzing `{target}` for {seconds} s");
        let status = Command::new(&cargo_bin)
            .current_dir(&fuzz_dir)
            .args(["fuzz", "run", "-s", "none", target])
            .args(&corpora)
            .args(["--", &max_time])
            .status()
            .map_err(|e| format!("could not start cargo fuzz: {e}"))?;
        if !status.success() {
            return Err(format!(
                "fuzz target `{target}` failed ({status}); the input is in fuzz/artifacts/{target}"
            ));
        }
        if smoke {
            println!("fuzz smoke: `{target}` ran {seconds} s without a crash");
        }
    }
    Ok(())
}
