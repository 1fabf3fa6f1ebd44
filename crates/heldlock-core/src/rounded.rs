//! Durations as people read them, for messages.

use std::fmt;
use std::time::Duration;

/// A duration rounded to what its magnitude makes worth saying:
/// milliseconds below a second (`201 ms`), seconds with one decimal below
/// a minute (`3.2 s`; none when it rounds to whole seconds: `30 s`), then
/// hours, minutes and seconds (`2 min 5 s`). Error messages use it, and so
/// does the `heldlock` command line.
///
/// ```
/// use std::time::Duration;
/// use heldlock_core::Rounded;
///
/// assert_eq!(Rounded(Duration::from_micros(201_513)).to_string(), "202 ms");
/// assert_eq!(Rounded(Duration::from_millis(3_249)).to_string(), "3.2 s");
/// assert_eq!(Rounded(Duration::from_secs(125)).to_string(), "2 min 5 s");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rounded(pub Duration);

impl fmt::Display for Rounded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        let millis = (nanos + 500_000) / 1_000_000;
        if millis < 1000 {
            return write!(f, "{millis} ms");
        }
        let tenths = (nanos + 50_000_000) / 100_000_000;
        if tenths < 600 {
            return if tenths.is_multiple_of(10) {
                write!(f, "{} s", tenths / 10)
            } else {
                write!(f, "{}.{} s", tenths / 10, tenths % 10)
            };
        }
        let secs = (nanos + 500_000_000) / 1_000_000_000;
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
        f.write_str(&parts.join(" "))
    }
}
