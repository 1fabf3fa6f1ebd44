//! `cargo xtask dist`: the `heldlock` command as a static executable, the
//! build that starts fastest, and a smoke run of what was built.
//!
//! A dynamically linked `heldlock` spends a third of a short `heldlock run`
//! in the dynamic loader and the start-up of three shared libraries (libc,
//! libgcc_s, libm): `docs/benchmarks.md`, "The CLI". Linking the C runtime
//! statically (`-C target-feature=+crt-static`) removes that. The flag is
//! given to the final crate alone (`cargo rustc`), since the proc-macro
//! crates of the build cannot be linked statically; the result stays a
//! position-independent executable.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cargo;

/// Where the static executable goes, under the target directory.
const DIST: &str = "dist/heldlock";

pub(crate) fn dist() -> Result<(), String> {
    cargo(
        &[
            "rustc",
            "--release",
            "--locked",
            "--package",
            "heldlock-cli",
            "--bin",
            "heldlock",
            "--",
            "-C",
            "target-feature=+crt-static",
        ],
        &[],
    )?;
    let target = target_dir();
    let built = target.join("release").join("heldlock");
    let dist = target.join(DIST);
    if let Some(dir) = dist.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("could not create {}: {e}", dir.display()))?;
    }
    // Copied away at once: the next ordinary release build links the same
    // path dynamically again.
    std::fs::copy(&built, &dist).map_err(|e| {
        format!(
            "could not copy {} to {}: {e}",
            built.display(),
            dist.display()
        )
    })?;
    smoke(&dist)?;
    println!("xtask dist: {} (static, smoke-tested)", dist.display());
    Ok(())
}

/// The workspace's target directory (`CARGO_TARGET_DIR` when set).
pub(crate) fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap_or(Path::new("."))
            .join("target"),
    }
}

/// Checks that `binary` needs no dynamic loader and runs a command under a
/// lock in a directory of its own, leaving nothing there.
fn smoke(binary: &Path) -> Result<(), String> {
    if let Some(interpreter) = interpreter(binary)? {
        return Err(format!(
            "{} is not static: it asks for the dynamic loader {interpreter}",
            binary.display()
        ));
    }
    let dir = std::env::temp_dir().join(format!("heldlock-dist-smoke-{}", std::process::id()));
    let lock = dir.join("demo.lock");
    let output = Command::new(binary)
        .args(["run", "--mkdir"])
        .arg(&lock)
        .args(["--", "echo", "hello"])
        .output()
        .map_err(|e| format!("could not start {}: {e}", binary.display()));
    let left = std::fs::read_dir(&dir).map(|entries| entries.count());
    let removed = std::fs::remove_dir_all(&dir);
    let output = output?;
    if !output.status.success() || output.stdout != b"hello\n" {
        return Err(format!(
            "`{} run --mkdir {} -- echo hello` gave {} with stdout {:?} and stderr {:?}",
            binary.display(),
            lock.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        ));
    }
    match left {
        Ok(0) => {}
        Ok(n) => return Err(format!("the smoke run left {n} files in {}", dir.display())),
        Err(e) => return Err(format!("could not list {}: {e}", dir.display())),
    }
    removed.map_err(|e| format!("could not remove {}: {e}", dir.display()))
}

/// The dynamic loader an ELF executable asks for (its `PT_INTERP`), if any.
fn interpreter(binary: &Path) -> Result<Option<String>, String> {
    const PT_INTERP: u32 = 3;
    let bytes =
        std::fs::read(binary).map_err(|e| format!("could not read {}: {e}", binary.display()))?;
    let not_elf = || {
        format!(
            "{} is not a 64-bit little-endian ELF file",
            binary.display()
        )
    };
    if bytes.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return Err(not_elf());
    }
    let read = |at: usize, len: usize| -> Result<u64, String> {
        let field = bytes.get(at..at + len).ok_or_else(not_elf)?;
        Ok(field
            .iter()
            .rev()
            .fold(0u64, |value, &byte| (value << 8) | u64::from(byte)))
    };
    let offset = |value: u64| usize::try_from(value).map_err(|_| not_elf());
    let (table, entry, count) = (
        offset(read(0x20, 8)?)?,
        offset(read(0x36, 2)?)?,
        offset(read(0x38, 2)?)?,
    );
    for index in 0..count {
        let header = table + index * entry;
        if read(header, 4)? == u64::from(PT_INTERP) {
            let start = offset(read(header + 8, 8)?)?;
            let len = offset(read(header + 32, 8)?)?;
            let path = bytes.get(start..start + len).ok_or_else(not_elf)?;
            let path = String::from_utf8_lossy(path);
            return Ok(Some(path.trim_end_matches('\0').to_owned()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_executable_names_its_loader() {
        // This test's own executable is linked dynamically (the default).
        let me = std::env::current_exe().expect("the test executable's path");
        let loader = interpreter(&me).expect("an ELF file");
        assert!(
            loader.as_deref().is_some_and(|path| path.contains("ld")),
            "{loader:?}"
        );
    }

    #[test]
    fn what_is_not_elf_is_refused() {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        assert!(interpreter(&manifest).is_err());
    }
}
