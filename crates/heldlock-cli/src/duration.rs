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

/// As [`parse`], refusing zero: most of heldlock's durations mean nothing at
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

/// Parses `--wait` as flock(1) takes `-w`: a bare number of seconds (`5`,
/// `0.5`), or else a human duration (`300ms`, `2s`). Zero is allowed: it
/// means "try once", as `-w 0` does for flock.
///
/// # Errors
///
/// A one-line explanation when `text` is neither, or is too long a wait.
pub(crate) fn parse_wait(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let duration = match bare_seconds(text) {
        Some(seconds) => seconds?,
        None => humantime::parse_duration(text).map_err(|error| {
            format!(
                "{error}; write seconds as flock does (5, 0.5) or a number with a unit \
                 (300ms, 2s, 5m)"
            )
        })?,
    };
    if duration > heldlock::MAX_DURATION {
        return Err(format!(
            "it must be at most 365 days; got {}; omit it to wait until the lock is free",
            show(duration)
        ));
    }
    Ok(duration)
}

/// `text` as a bare number of seconds (`5`, `0.5`, `.5`): `None` when it is
/// not written as one (it may still be a human duration), `Some(Err)` when
/// it is one but no duration can hold it.
fn bare_seconds(text: &str) -> Option<Result<Duration, String>> {
    let digits = text.bytes().filter(u8::is_ascii_digit).count();
    let dots = text.bytes().filter(|&byte| byte == b'.').count();
    if digits == 0 || dots > 1 || digits + dots != text.len() {
        return None;
    }
    Some(
        text.parse::<f64>()
            .ok()
            .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
            .ok_or_else(|| format!("{text} seconds is too long a wait")),
    )
}

/// Shows `duration` for people, rounded as the library's messages are
/// ([`heldlock::Rounded`]: `201 ms`, `3.2 s`, `30 s`, `2 min 5 s`).
pub(crate) fn show(duration: Duration) -> String {
    heldlock::Rounded(duration).to_string()
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
        assert_eq!(parse_positive("1ms"), Ok(Duration::from_millis(1)));
    }

    #[test]
    fn wait_takes_flock_seconds_and_human_durations() {
        assert_eq!(parse_wait("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_wait("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_wait(".25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_wait("0"), Ok(Duration::ZERO));
        assert_eq!(parse_wait("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_wait("2s"), Ok(Duration::from_secs(2)));
        for bad in [
            "",
            "soon",
            "-1",
            "1.2.3",
            ".",
            "5 x",
            "400days",
            "1e3",
            "99999999999",
        ] {
            let error = parse_wait(bad).err();
            assert!(error.is_some(), "{bad:?} was accepted");
            assert!(!error.unwrap_or_default().contains('\n'));
        }
    }

    #[test]
    fn shows_durations_for_people() {
        assert_eq!(show(Duration::from_millis(0)), "0 ms");
        assert_eq!(show(Duration::from_millis(250)), "250 ms");
        assert_eq!(show(Duration::from_nanos(201_513_637)), "202 ms");
        assert_eq!(show(Duration::from_nanos(999_600_000)), "1 s");
        assert_eq!(show(Duration::from_millis(3_249)), "3.2 s");
        assert_eq!(show(Duration::from_millis(3_250)), "3.3 s");
        assert_eq!(show(Duration::from_secs(30)), "30 s");
        assert_eq!(show(Duration::from_millis(1_011)), "1 s");
        assert_eq!(show(Duration::from_millis(59_960)), "1 min");
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
