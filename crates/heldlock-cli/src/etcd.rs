//! etcd locks (`etcd://HOST:PORT/NAME`): connecting with the command
//! line's credentials, and what a failed connection says.

use std::time::Duration;

use heldlock::LockOptions;
use heldlock::etcd::etcd_client::ConnectOptions;
use heldlock::etcd::{DEFAULT_REQUEST_TIMEOUT, EtcdBackend, EtcdError, EtcdLock};

use crate::cli::EtcdArgs;
use crate::exit::CliError;
use crate::target::Etcd;

/// The environment variable that holds the etcd user's password.
pub(crate) const ENV_PASSWORD: &str = "HELDLOCK_ETCD_PASSWORD";

/// The client's options: the backend's timeouts, and the credentials.
///
/// # Errors
///
/// A usage error when only one of the user and the password is given.
fn connect_options(args: &EtcdArgs) -> Result<ConnectOptions, CliError> {
    let options = ConnectOptions::new()
        .with_connect_timeout(DEFAULT_REQUEST_TIMEOUT)
        .with_keep_alive(Duration::from_secs(5), DEFAULT_REQUEST_TIMEOUT);
    let user = args.etcd_user.as_deref().filter(|user| !user.is_empty());
    let password = std::env::var(ENV_PASSWORD)
        .ok()
        .filter(|password| !password.is_empty());
    match (user, password) {
        (Some(user), Some(password)) => Ok(options.with_user(user, password)),
        (None, None) => Ok(options),
        (Some(user), None) => Err(CliError::Usage(format!(
            "--etcd-user {user} needs the user's password in {ENV_PASSWORD}"
        ))),
        (None, Some(_)) => Err(CliError::Usage(format!(
            "{ENV_PASSWORD} is set but no etcd user is: give --etcd-user USER or set \
             HELDLOCK_ETCD_USER"
        ))),
    }
}

/// The backend for `status` and `break`.
///
/// # Errors
///
/// A usage error for credentials given by halves; [`CliError::Query`]
/// (exit 2) when etcd cannot be reached or refuses.
pub(crate) async fn backend(
    etcd: &Etcd,
    args: &EtcdArgs,
    shown: &str,
) -> Result<EtcdBackend, CliError> {
    let options = connect_options(args)?;
    EtcdBackend::connect_with(&etcd.endpoints, etcd.key.as_bytes(), options)
        .await
        .map_err(|error| CliError::Remote {
            message: unreachable(shown, &error),
            code: crate::exit::ERROR,
        })
}

/// The lock for `run`, with `options` (already validated).
///
/// # Errors
///
/// A usage error for credentials given by halves; [`CliError::Remote`]
/// (exit 1) when etcd cannot be reached or refuses.
pub(crate) async fn lock(
    etcd: &Etcd,
    args: &EtcdArgs,
    options: LockOptions,
    shown: &str,
) -> Result<EtcdLock, CliError> {
    let connect = connect_options(args)?;
    EtcdLock::connect_with(&etcd.endpoints, etcd.key.as_bytes(), options, connect)
        .await
        .map_err(|error| {
            let message = match find_etcd_error(&error) {
                Some(etcd_error) => unreachable(shown, etcd_error),
                None => format!("cannot use the lock {shown}: {error}"),
            };
            CliError::Remote {
                message,
                code: crate::exit::FAILURE,
            }
        })
}

/// The one line for a lock whose cluster failed us.
fn unreachable(shown: &str, error: &EtcdError) -> String {
    format!("cannot use the lock {shown}: {error}")
}

/// The `EtcdError` in `error`'s chain of sources.
fn find_etcd_error(error: &heldlock::Error) -> Option<&EtcdError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(found) = e.downcast_ref::<EtcdError>() {
            return Some(found);
        }
        source = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_in_pairs() {
        // The password's variable is read from the environment, which
        // the other tests of this binary leave alone.
        let none = EtcdArgs { etcd_user: None };
        let user = EtcdArgs {
            etcd_user: Some("locker".into()),
        };
        if std::env::var_os(ENV_PASSWORD).is_none() {
            assert!(connect_options(&none).is_ok());
            assert!(matches!(
                connect_options(&user),
                Err(CliError::Usage(message)) if message.contains(ENV_PASSWORD)
            ));
        }
    }
}
