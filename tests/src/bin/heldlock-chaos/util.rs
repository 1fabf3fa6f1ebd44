//! Small helpers every part of the program shares: error text, millisecond
//! conversions, the wall clock, and bounded waits.

use std::fmt::Display;
use std::process::Child;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub(super) fn text(error: impl Display) -> String {
    error.to_string()
}

pub(super) fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

pub(super) fn millis(duration: Duration) -> u128 {
    duration.as_millis()
}

/// Wall-clock milliseconds since the epoch, shared by the driver and its
/// workers for matching skipped writes with pauses.
pub(super) fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Polls `done` every 5 ms for up to `limit`.
pub(super) fn wait_for(
    limit: Duration,
    what: &str,
    mut done: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("timed out after {limit:?} waiting for {what}"));
        }
        std::thread::sleep(ms(5));
    }
    Ok(())
}

/// Waits up to `limit` for `child` to exit, and kills it when it does not.
pub(super) fn wait_exit(
    child: &mut Child,
    limit: Duration,
) -> Result<std::process::ExitStatus, String> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().map_err(text)? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("a worker did not finish within {limit:?}"));
        }
        std::thread::sleep(ms(5));
    }
}
