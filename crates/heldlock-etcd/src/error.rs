//! What can go wrong talking to etcd, sorted into what a person can act on.

use std::time::Duration;

use heldlock_core::{BackendError, Rounded, Step};

/// Why a request to etcd failed.
///
/// Each variant's message says what to check. Inside a lock operation it
/// reaches the caller as the source of a
/// [`BackendError::Other`](heldlock_core::BackendError::Other); downcast the
/// source to tell the kinds apart:
///
/// ```
/// use heldlock_etcd::EtcdError;
///
/// fn is_auth_problem(error: &heldlock_core::Error) -> bool {
///     let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
///     while let Some(e) = source {
///         if let Some(EtcdError::Auth { .. }) = e.downcast_ref::<EtcdError>() {
///             return true;
///         }
///         source = e.source();
///     }
///     false
/// }
/// # let _ = is_auth_problem;
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdError {
    /// No connection to etcd could be made, or it broke.
    #[error(
        "could not reach etcd at {at} to {action}: {source}; check that etcd runs there \
         and that this host can reach it (`etcdctl --endpoints {at} endpoint health`)"
    )]
    Unreachable {
        /// The endpoints, as configured.
        at: String,
        /// What was being done.
        action: &'static str,
        /// The client's error.
        #[source]
        source: etcd_client::Error,
    },
    /// etcd did not answer in time: down, unreachable without a refusal,
    /// or without a leader.
    #[error(
        "etcd at {at} did not answer within {} to {action}; it may be down, unreachable \
         or without a leader (`etcdctl --endpoints {at} endpoint status`); a slow cluster \
         needs a longer `EtcdBackend::with_request_timeout`",
        Rounded(*timeout)
    )]
    Timeout {
        /// The endpoints, as configured.
        at: String,
        /// What was being done.
        action: &'static str,
        /// How long we waited.
        timeout: Duration,
    },
    /// etcd refused the credentials, or the user may not touch the key.
    #[error(
        "etcd at {at} refused to {action}: {source}; check the user name and password \
         (`ConnectOptions::with_user`) and that the user's role may read and write the \
         lock's key (`etcdctl role grant-permission`)"
    )]
    Auth {
        /// The endpoints, as configured.
        at: String,
        /// What was being done.
        action: &'static str,
        /// The client's error.
        #[source]
        source: etcd_client::Error,
    },
    /// An endpoint or option the client cannot use.
    #[error(
        "cannot use the etcd endpoints or options {at}: {source}; endpoints look like \
         `http://127.0.0.1:2379` (https needs etcd-client's `tls` feature)"
    )]
    Config {
        /// The endpoints, as configured.
        at: String,
        /// The client's error.
        #[source]
        source: etcd_client::Error,
    },
    /// etcd answered with an error not covered above.
    #[error("etcd at {at} failed to {action}: {source}")]
    Failed {
        /// The endpoints, as configured.
        at: String,
        /// What was being done.
        action: &'static str,
        /// The client's error.
        #[source]
        source: etcd_client::Error,
    },
    /// etcd answered, but not as its API promises (a transaction without
    /// the response it asked for).
    #[error("etcd at {at} answered the request to {action} unexpectedly: {detail}")]
    Unexpected {
        /// The endpoints, as configured.
        at: String,
        /// What was being done.
        action: &'static str,
        /// What was odd.
        detail: String,
    },
}

impl EtcdError {
    /// Sorts a client error by what the person should check.
    pub(crate) fn classify(at: &str, action: &'static str, error: etcd_client::Error) -> Self {
        let at = at.to_owned();
        match kind(&error) {
            Kind::Unreachable => EtcdError::Unreachable {
                at,
                action,
                source: error,
            },
            Kind::Auth => EtcdError::Auth {
                at,
                action,
                source: error,
            },
            Kind::Config => EtcdError::Config { at, source: error },
            Kind::Other => EtcdError::Failed {
                at,
                action,
                source: error,
            },
        }
    }

    /// This error as the core's error for `step` on `resource`.
    pub(crate) fn into_backend(self, step: Step, resource: String) -> BackendError {
        BackendError::Other {
            step,
            resource,
            source: Box::new(self),
        }
    }
}

enum Kind {
    Unreachable,
    Auth,
    Config,
    Other,
}

fn kind(error: &etcd_client::Error) -> Kind {
    use etcd_client::Error as E;
    match error {
        E::TransportError(_) | E::IoError(_) | E::EndpointError(_) => Kind::Unreachable,
        E::InvalidArgs(_) | E::InvalidUri(_) | E::InvalidMetadataValue(_) => Kind::Config,
        E::GRpcStatus(status) => status_kind(i32::from(status.code()), status.message()),
        _ => Kind::Other,
    }
}

/// gRPC status codes, fixed by the gRPC specification (named here rather
/// than through tonic, which etcd-client does not re-export).
mod code {
    pub(super) const CANCELLED: i32 = 1;
    pub(super) const DEADLINE_EXCEEDED: i32 = 4;
    pub(super) const PERMISSION_DENIED: i32 = 7;
    pub(super) const ABORTED: i32 = 10;
    pub(super) const UNAVAILABLE: i32 = 14;
    pub(super) const UNAUTHENTICATED: i32 = 16;
}

/// etcd reports some authentication failures as `InvalidArgument` or
/// `FailedPrecondition` with a telling message, so the message counts too.
fn status_kind(code: i32, message: &str) -> Kind {
    const AUTH_MESSAGES: &[&str] = &[
        "authentication failed",
        "user name is empty",
        "user name not found",
        "invalid auth token",
        "permission denied",
        "authentication is not enabled",
    ];
    match code {
        code::UNAUTHENTICATED | code::PERMISSION_DENIED => Kind::Auth,
        _ if AUTH_MESSAGES.iter().any(|m| message.contains(m)) => Kind::Auth,
        // A server-side deadline ("request timed out") means the cluster
        // could not commit: no leader, or members it cannot reach.
        code::UNAVAILABLE | code::CANCELLED | code::ABORTED | code::DEADLINE_EXCEEDED => {
            Kind::Unreachable
        }
        _ => Kind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVALID_ARGUMENT: i32 = 3;
    const INTERNAL: i32 = 13;

    #[test]
    fn auth_messages_count_whatever_the_code() {
        assert!(matches!(
            status_kind(
                INVALID_ARGUMENT,
                "etcdserver: authentication failed, invalid user ID or password"
            ),
            Kind::Auth
        ));
        assert!(matches!(
            status_kind(code::UNAVAILABLE, "etcdserver: no leader"),
            Kind::Unreachable
        ));
        assert!(matches!(
            status_kind(INTERNAL, "something else"),
            Kind::Other
        ));
    }

    #[test]
    fn messages_say_what_to_check() {
        let timeout = EtcdError::Timeout {
            at: "http://127.0.0.1:1".into(),
            action: "create the lock",
            timeout: Duration::from_secs(5),
        };
        let text = timeout.to_string();
        assert!(text.contains("within 5 s to create the lock"), "{text}");
        assert!(text.contains("endpoint status"), "{text}");
    }
}
