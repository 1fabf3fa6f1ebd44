//! The error type of heldlock's lock API.

use std::time::Duration;

use crate::lock::backend::BackendError;
use crate::lock::options::OptionsError;
use crate::lock::record::Holder;

/// Why a lock operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The lock stayed busy for the whole `max_wait`.
    #[error(
        "timed out after {} waiting for lock {resource}{}",
        rounded(*waited),
        held_by(holder)
    )]
    Timeout {
        /// The lock resource (a path).
        resource: String,
        /// Who held it when we gave up, if known.
        holder: Option<Holder>,
        /// How long we waited.
        waited: Duration,
    },
    /// The backend could not carry out a step.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// An option was invalid.
    #[error(transparent)]
    Options(#[from] OptionsError),
    /// The lock resource itself is invalid (an empty path, say).
    #[error("invalid lock {resource:?}: {reason}")]
    InvalidResource {
        /// The resource as given.
        resource: String,
        /// What is wrong with it, and what to do.
        reason: String,
    },
}

/// A duration as people read it: `201 ms`, `3.2 s`, `4 min 5 s`, rounded
/// to what the magnitude makes worth saying.
fn rounded(duration: Duration) -> String {
    let millis = duration.as_secs_f64() * 1000.0;
    if millis < 1.0 {
        format!("{} µs", duration.as_micros())
    } else if millis < 1000.0 {
        format!("{millis:.0} ms")
    } else if millis < 60_000.0 {
        format!("{:.1} s", millis / 1000.0)
    } else {
        let secs = duration.as_secs();
        format!("{} min {} s", secs / 60, secs % 60)
    }
}

fn held_by(holder: &Option<Holder>) -> String {
    match holder {
        Some(holder) => format!(", held by {holder}"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_messages_are_rounded() {
        assert_eq!(rounded(Duration::from_micros(201_513)), "202 ms");
        assert_eq!(rounded(Duration::from_micros(340)), "340 µs");
        assert_eq!(rounded(Duration::from_millis(3_249)), "3.2 s");
        assert_eq!(rounded(Duration::from_secs(245)), "4 min 5 s");
        let timeout = Error::Timeout {
            resource: "db.lock".into(),
            holder: None,
            waited: Duration::from_nanos(5_000_513_637),
        };
        assert_eq!(
            timeout.to_string(),
            "timed out after 5.0 s waiting for lock db.lock"
        );
    }
}
