//! Human durations: parsed with `humantime` (`500ms`, `30s`, `2m`, `1h 30m`)
//! and shown the way people read them (`500 ms`, `3.2 s`, `2 min 5 s`).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The first instant RFC 3339 cannot write (year 10000), in seconds since 1970.
const YEAR_10000: u64 = 253_402_300_800;

/// Parses a command-line duration such as `500ms`, `30s` or `2m`.
///
/// Used as clap's value parser, so a bad value is reported as a usage error
/// naming the flag.
///
/// # Errors
///
/// A one-line explanation when `text` is not a duration with a unit.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|error| format!("{error}; write a number with a unit, e.g. 500ms, 30s or 2m"))
}

/// As [`parse`], refusing zero: no option of heldlock means anything at
/// zero (a zero `--stale` would judge every lock stale).
///
/// # Errors
///
/// As [`parse`], and for a zero duration.
pub(crate) fn parse_positive(text: &str) -> Result<Duration, String> {
    match parse(text)? {
        Duration::ZERO => Err("it must be more than 0".to_owned()),
        duration => Ok(duration),
    }
}

/// As [`parse_positive`], for `--wait`, whose zero has a flag of its own.
///
/// # Errors
///
/// As [`parse_positive`].
pub(crate) fn parse_wait(text: &str) -> Result<Duration, String> {
    match parse(text)? {
        Duration::ZERO => {
            Err("it must be more than 0; use --no-wait to try once without waiting".to_owned())
        }
        duration => Ok(duration),
    }
}

/// Shows `duration` for people: milliseconds below a second, seconds with
/// one decimal below a minute (none when exactly whole), then minutes and hours.
pub(crate) fn show(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis < 1000 {
        return format!("{millis} ms");
    }
    let secs = duration.as_secs();
    if secs < 60 {
        let tenths = millis / 100;
        return if duration.subsec_millis() == 0 {
            format!("{secs} s")
        } else {
            format!("{}.{} s", tenths / 10, tenths % 10)
        };
    }
    let (hours, minutes, seconds) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut parts = Vec::new();
    if hours > 0 {
        parts.push(format!("{hours} h"));
    }
    if minutes > 0 {
        parts.push(format!("{minutes} min"));
    }
    if seconds > 0 {
        parts.push(format!("{seconds} s"));
    }
    parts.join(" ")
}

/// `time` in RFC 3339 UTC with milliseconds, or `None` when it is outside
/// the years 1970 to 9999 (a lock file's mtime can be anything; `humantime`
/// would panic on such a time).
pub(crate) fn timestamp(time: SystemTime) -> Option<String> {
    let since_epoch = time.duration_since(UNIX_EPOCH).ok()?;
    if since_epoch.as_secs() >= YEAR_10000 {
        return None;
    }
    let mut text = String::new();
    write!(text, "{}", humantime::format_rfc3339_millis(time)).ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_human_durations() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse(" 1h 30m "), Ok(Duration::from_secs(5400)));
    }

    #[test]
    fn refuses_numbers_without_unit_and_garbage() {
        for bad in ["5", "", "fast", "-1s", "1.5.s"] {
            let error = parse(bad).err();
            assert!(error.is_some(), "{bad:?} was accepted");
            assert!(!error.unwrap_or_default().contains('\n'));
        }
    }

    #[test]
    fn zero_is_refused_where_it_means_nothing() {
        assert!(parse_positive("0s").is_err());
        assert!(parse_wait("0ms").is_err_and(|e| e.contains("--no-wait")));
        assert_eq!(parse_positive("1ms"), Ok(Duration::from_millis(1)));
    }

    #[test]
    fn shows_durations_for_people() {
        assert_eq!(show(Duration::from_millis(0)), "0 ms");
        assert_eq!(show(Duration::from_millis(250)), "250 ms");
        assert_eq!(show(Duration::from_millis(3_249)), "3.2 s");
        assert_eq!(show(Duration::from_secs(30)), "30 s");
        assert_eq!(show(Duration::from_millis(1_011)), "1.0 s");
        assert_eq!(show(Duration::from_secs(125)), "2 min 5 s");
        assert_eq!(show(Duration::from_secs(3600)), "1 h");
        assert_eq!(show(Duration::from_secs(3661)), "1 h 1 min 1 s");
    }

    #[test]
    fn timestamps_outside_rfc3339_are_none_not_panics() {
        assert_eq!(
            timestamp(UNIX_EPOCH + Duration::from_millis(1_500)).as_deref(),
            Some("1970-01-01T00:00:01.500Z")
        );
        assert_eq!(timestamp(UNIX_EPOCH - Duration::from_secs(1)), None);
        assert_eq!(
            timestamp(UNIX_EPOCH + Duration::from_secs(YEAR_10000)),
            None
        );
    }
}
