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
        crate::Rounded(*waited),
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
    fn the_timeout_message_rounds_the_wait() {
        let timeout = Error::Timeout {
            resource: "db.lock".into(),
            holder: None,
            waited: Duration::from_nanos(5_000_513_637),
        };
        assert_eq!(
            timeout.to_string(),
            "timed out after 5 s waiting for lock db.lock"
        );
    }
}
