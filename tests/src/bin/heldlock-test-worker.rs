//! A helper process for the multi-process tests (`tests/tests/processes.rs`).
//!
//! ```text
//! heldlock-test-worker increment <lock> <counter> <times> <stale-ms> [<poll-ms>]
//! heldlock-test-worker hold <lock> <ready-file> <stale-ms>
//! heldlock-test-worker acquire <lock> <out-file> <stale-ms>
//! heldlock-test-worker probe <lock> <stale-ms> <max-wait-ms>
//! ```
//!
//! `increment` does read-modify-write increments of a counter file under the
//! lock; `hold` acquires, writes `ready-file` and waits to be killed;
//! `acquire` waits for the lock and writes the wall-clock time (ms since the
//! epoch) at which it got it into `out-file`. `probe` tries to acquire (and
//! then releases) once, waiting up to `max-wait-ms`, and prints one line on
//! standard output: `acquired released=<Released>`, `timeout holder=<holder>`,
//! or `error step=<step> errno=<n> action=<action>` (`error other=<message>`
//! for errors that are not I/O); it exits 0 whatever the outcome, so that the
//! hostile-file tests can run it as another user.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use heldlock_core::LockOptions;
use heldlock_tokio::TokioRuntime;

type FileLock = heldlock_fs::FileLock<TokioRuntime>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("worker: no runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("worker {args:?}: {error}");
            ExitCode::FAILURE
        }
    }
}

fn options(stale_ms: &str) -> Result<LockOptions, String> {
    options_polling(stale_ms, "5")
}

fn options_polling(stale_ms: &str, poll_ms: &str) -> Result<LockOptions, String> {
    let stale: u64 = stale_ms
        .parse()
        .map_err(|e| format!("bad stale {stale_ms:?}: {e}"))?;
    let poll: u64 = poll_ms
        .parse()
        .map_err(|e| format!("bad poll {poll_ms:?}: {e}"))?;
    Ok(LockOptions::new(Duration::from_millis(stale))
        .max_wait(Duration::from_secs(120))
        .poll(Duration::from_millis(poll)))
}

fn epoch_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

async fn run(args: &[String]) -> Result<(), String> {
    let text = |e: &dyn std::fmt::Display| e.to_string();
    match args {
        [mode, lock, counter, times, stale, rest @ ..]
            if mode == "increment" && rest.len() <= 1 =>
        {
            let poll = rest.first().map_or("5", String::as_str);
            let lock = FileLock::new(lock, options_polling(stale, poll)?).map_err(|e| text(&e))?;
            let counter = PathBuf::from(counter);
            let times: u32 = times.parse().map_err(|e| text(&e))?;
            for _ in 0..times {
                let held = lock.acquire().await.map_err(|e| text(&e))?;
                let value: u64 = match std::fs::read_to_string(&counter) {
                    Ok(s) => s.trim().parse().map_err(|e| text(&e))?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                    Err(e) => return Err(e.to_string()),
                };
                if !held.refresh().await.map_err(|e| text(&e))? {
                    return Err("lost the lock before writing".into());
                }
                std::fs::write(&counter, format!("{}\n", value + 1)).map_err(|e| text(&e))?;
                held.release().await.map_err(|e| text(&e))?;
            }
            Ok(())
        }
        [mode, lock, ready, stale] if mode == "hold" => {
            let lock = FileLock::new(lock, options(stale)?).map_err(|e| text(&e))?;
            let _held = lock.acquire().await.map_err(|e| text(&e))?;
            std::fs::write(ready, "held\n").map_err(|e| text(&e))?;
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        }
        [mode, lock, out, stale] if mode == "acquire" => {
            let lock = FileLock::new(lock, options(stale)?).map_err(|e| text(&e))?;
            let held = lock.acquire().await.map_err(|e| text(&e))?;
            let at = epoch_ms();
            std::fs::write(out, format!("{at}\n")).map_err(|e| text(&e))?;
            held.release().await.map_err(|e| text(&e))?;
            Ok(())
        }
        [mode, lock, stale, max_wait] if mode == "probe" => {
            let max_wait: u64 = max_wait.parse().map_err(|e| text(&e))?;
            let options = options(stale)?.max_wait(Duration::from_millis(max_wait));
            let lock = FileLock::new(lock, options).map_err(|e| text(&e))?;
            println!("{}", probe(&lock).await);
            Ok(())
        }
        _ => Err("usage: see the module docs of heldlock-test-worker".into()),
    }
}

async fn probe(lock: &FileLock) -> String {
    match lock.acquire().await {
        Ok(held) => match held.release().await {
            Ok(released) => format!("acquired released={released:?}"),
            Err(error) => format!("acquired release-error={error}"),
        },
        Err(heldlock_core::Error::Timeout { holder, .. }) => match holder {
            Some(holder) => format!("timeout holder={holder}"),
            None => "timeout holder=none".to_string(),
        },
        Err(heldlock_core::Error::Backend(heldlock_core::BackendError::Io {
            step,
            action,
            source,
            ..
        })) => format!(
            "error step={step} errno={} action={action}",
            source.raw_os_error().unwrap_or(0)
        ),
        Err(error) => format!("error other={error}"),
    }
}
