//! What the LOCK argument names: a lock file, or a key on etcd
//! (`etcd://HOST:PORT[,HOST:PORT...]/NAME`).

use std::ffi::OsString;
use std::path::PathBuf;

use crate::cli;
use crate::exit::CliError;

/// The scheme of an etcd lock.
pub(crate) const ETCD: &str = "etcd://";
/// The scheme an etcd lock over TLS would have: refused, not supported yet.
const ETCD_TLS: &str = "etcds://";
/// etcd's client port, for a host given without one.
pub(crate) const DEFAULT_PORT: u16 = 2379;

/// A lock named on the command line.
#[derive(Debug)]
pub(crate) enum Target {
    /// A lock file at this path.
    File(PathBuf),
    /// A key on an etcd cluster.
    #[cfg(feature = "etcd")]
    Etcd(Etcd),
}

/// An etcd lock: where the cluster is, and the key.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
pub(crate) struct Etcd {
    /// The client URLs, `http://HOST:PORT`.
    pub(crate) endpoints: Vec<String>,
    /// The key: NAME exactly as given.
    pub(crate) key: String,
}

/// Reads the LOCK argument: `etcd://...` is an etcd lock, anything else a
/// lock file path.
///
/// # Errors
///
/// A usage error (exit 64) for an empty path, a malformed etcd lock, an
/// `etcds://` lock (TLS is not supported yet), or an etcd lock given to a
/// heldlock built without the `etcd` feature.
pub(crate) fn parse(lock: &OsString) -> Result<Target, CliError> {
    let Some(text) = lock.to_str() else {
        return cli::lock_path(lock).map(Target::File);
    };
    if has_scheme(text, ETCD_TLS) {
        return Err(CliError::Usage(format!(
            "{text}: TLS to etcd (etcds://) is not supported yet; heldlock talks plain \
             http to etcd: use etcd://HOST:PORT/NAME on a network you trust (or reach the \
             cluster through a local TLS proxy)"
        )));
    }
    if !has_scheme(text, ETCD) {
        return cli::lock_path(lock).map(Target::File);
    }
    let etcd = parse_etcd(&text[ETCD.len()..]).map_err(|why| {
        CliError::Usage(format!(
            "{text}: {why}; an etcd lock looks like etcd://HOST:PORT[,HOST:PORT...]/NAME, \
             e.g. etcd://127.0.0.1:2379/locks/db"
        ))
    })?;
    #[cfg(feature = "etcd")]
    {
        Ok(Target::Etcd(etcd))
    }
    #[cfg(not(feature = "etcd"))]
    {
        let _ = etcd;
        Err(CliError::Usage(format!(
            "{text}: this heldlock was built without etcd support; build it with \
             `cargo install --path crates/heldlock-cli --features etcd` (which needs \
             protoc, Debian's protobuf-compiler)"
        )))
    }
}

/// Whether `text` begins with `scheme`, in any case.
fn has_scheme(text: &str, scheme: &str) -> bool {
    text.get(..scheme.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(scheme))
}

/// `HOST:PORT[,HOST:PORT...]/NAME` after the scheme.
fn parse_etcd(rest: &str) -> Result<Etcd, String> {
    let Some((hosts, key)) = rest.split_once('/') else {
        return Err("the lock's NAME is missing".into());
    };
    if key.is_empty() {
        return Err("the lock's NAME is empty".into());
    }
    if hosts.is_empty() {
        return Err("no etcd host is given".into());
    }
    let endpoints = hosts
        .split(',')
        .map(endpoint)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Etcd {
        endpoints,
        key: key.to_owned(),
    })
}

/// `http://HOST:PORT` for `HOST[:PORT]` (`[::1]:2379` for IPv6).
fn endpoint(host: &str) -> Result<String, String> {
    if host.is_empty() {
        return Err("an etcd host in the list is empty".into());
    }
    if host.contains(['@', '?', '#', ' ']) {
        return Err(format!(
            "{host:?} is not HOST:PORT (give a user with --etcd-user and the password in \
             HELDLOCK_ETCD_PASSWORD, never in the lock)"
        ));
    }
    // The port is after the last colon, unless that colon is inside an
    // IPv6 address's brackets.
    let port = match host.rsplit_once(':') {
        Some((name, port)) if !port.contains(']') => {
            if name.is_empty() {
                return Err(format!("{host:?} has no host name"));
            }
            Some(port)
        }
        _ => None,
    };
    match port {
        Some(port) => match port.parse::<u16>() {
            Ok(number) if number > 0 => Ok(format!("http://{host}")),
            _ => Err(format!("{host:?} has no valid port")),
        },
        None => Ok(format!("http://{host}:{DEFAULT_PORT}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_locks_name_hosts_and_a_key() {
        assert_eq!(
            parse_etcd("127.0.0.1:2379/counter"),
            Ok(Etcd {
                endpoints: vec!["http://127.0.0.1:2379".into()],
                key: "counter".into()
            })
        );
        assert_eq!(
            parse_etcd("a:1,b,[::1]:3,[::1]/locks/db"),
            Ok(Etcd {
                endpoints: vec![
                    "http://a:1".into(),
                    "http://b:2379".into(),
                    "http://[::1]:3".into(),
                    "http://[::1]:2379".into()
                ],
                key: "locks/db".into()
            })
        );
        for bad in [
            "127.0.0.1:2379",
            "127.0.0.1:2379/",
            "/k",
            "a,,b/k",
            "a:0/k",
            "a:x/k",
            ":1/k",
            "u:p@a:1/k",
        ] {
            assert!(parse_etcd(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn anything_else_is_a_path_and_tls_is_refused() {
        let parsed = parse(&OsString::from("state/etcd:/x.lock")).ok();
        assert!(
            matches!(parsed, Some(Target::File(path)) if path == std::path::Path::new("state/etcd:/x.lock"))
        );
        for tls in ["etcds://a:1/k", "ETCDS://a:1/k"] {
            match parse(&OsString::from(tls)) {
                Err(CliError::Usage(message)) => assert!(message.contains("not supported yet")),
                other => panic!("{tls}: {other:?}"),
            }
        }
        assert!(matches!(
            parse(&OsString::from("etcd://a:1/")),
            Err(CliError::Usage(_))
        ));
    }
}
