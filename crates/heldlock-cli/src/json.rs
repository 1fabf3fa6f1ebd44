//! The JSON that `status --json` and `break --json` print: exactly one
//! object per run, in every outcome (errors included), with a `schema`
//! version and the same keys whatever the outcome; a value that does not
//! apply is `null`. docs/cli.md documents the keys.

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::duration::timestamp;
use crate::holder::View;

/// The version of the objects below; raised when a key changes meaning or
/// goes away (adding a key does not raise it).
pub(crate) const SCHEMA: u64 = 1;

/// The keys that describe a present lock's holder, every one `null` when
/// there is no lock to describe.
pub(crate) const HOLDER_KEYS: [&str; 15] = [
    "pid",
    "owner",
    "host",
    "acquired_at",
    "refreshed_at",
    "age_ms",
    "stamp_in_future",
    "stale",
    "stale_after_ms",
    "kernel_held",
    "holder_dead",
    "breakable",
    "format",
    "fields",
    "summary",
];

/// Milliseconds as a JSON number (saturating).
fn millis(duration: Duration) -> Value {
    Value::from(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

/// The holder keys for `view` (judged against `stale`), or all `null`.
pub(crate) fn holder(view: Option<&View>, stale: Duration) -> Map<String, Value> {
    let Some(view) = view else {
        return HOLDER_KEYS
            .iter()
            .map(|key| ((*key).to_owned(), Value::Null))
            .collect();
    };
    let record = view.record.as_ref();
    let fields = record.map(|record| {
        record
            .fields
            .iter()
            .map(|(key, value)| (key.clone(), Value::from(value.as_str())))
            .collect::<Map<String, Value>>()
    });
    let object = json!({
        "pid": record.map(|record| record.pid),
        "owner": record.map(|record| record.owner.as_str()),
        "host": view.host(),
        "acquired_at": record.and_then(|record| timestamp(record.acquired_at)),
        "refreshed_at": timestamp(view.refreshed_at),
        "age_ms": millis(view.age),
        "stamp_in_future": view.stamp_in_future,
        "stale": view.is_stale(stale),
        "stale_after_ms": millis(view.stale_after(stale)),
        "kernel_held": view.kernel_held,
        "holder_dead": view.holder_dead,
        "breakable": view.breakable,
        "format": view.format().name(),
        "fields": fields,
        "summary": view.summary,
    });
    match object {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// One object: `head` (the command's own keys, in order) then the holder keys.
pub(crate) fn object(head: Vec<(&str, Value)>, holder: Map<String, Value>) -> Value {
    let mut map = Map::new();
    map.insert("schema".to_owned(), Value::from(SCHEMA));
    for (key, value) in head {
        map.insert(key.to_owned(), value);
    }
    map.extend(holder);
    Value::Object(map)
}

/// The object `status --json` prints: `state` is `free`, `held` or `error`.
pub(crate) fn status(
    lock: Option<&str>,
    state: &str,
    error: Option<&str>,
    view: Option<&View>,
    stale: Duration,
) -> Value {
    object(
        vec![
            ("command", Value::from("status")),
            ("lock", lock.map_or(Value::Null, Value::from)),
            ("state", Value::from(state)),
            ("error", error.map_or(Value::Null, Value::from)),
        ],
        holder(view, stale),
    )
}

/// The object `break --json` prints: `result` is `broken`, `free`,
/// `refused`, `changed` or `error`; the holder keys describe the lock as
/// inspected before breaking it.
pub(crate) fn breaking(
    lock: Option<&str>,
    result: &str,
    forced: Option<bool>,
    error: Option<&str>,
    view: Option<&View>,
    stale: Duration,
) -> Value {
    object(
        vec![
            ("command", Value::from("break")),
            ("lock", lock.map_or(Value::Null, Value::from)),
            ("result", Value::from(result)),
            ("forced", forced.map_or(Value::Null, Value::from)),
            ("error", error.map_or(Value::Null, Value::from)),
        ],
        holder(view, stale),
    )
}

/// For a usage error: the command (`status` or `break`) whose `--json` was
/// asked for on `args` (the arguments after the program name), if any.
pub(crate) fn requested(args: &[std::ffi::OsString]) -> Option<&'static str> {
    let command = args
        .iter()
        .find(|arg| !arg.to_string_lossy().starts_with('-'))?;
    let command = match command.to_str() {
        Some("status") => "status",
        Some("break") => "break",
        _ => return None,
    };
    args.iter()
        .take_while(|arg| *arg != "--")
        .any(|arg| arg == "--json")
        .then_some(command)
}

/// The object for a usage error of `command` (`status` or `break`).
pub(crate) fn usage_error(command: &str, message: &str) -> Value {
    match command {
        "break" => breaking(None, "error", None, Some(message), None, Duration::ZERO),
        _ => status(None, "error", Some(message), None, Duration::ZERO),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_has_the_same_keys() {
        let free = status(Some("x"), "free", None, None, Duration::from_secs(1));
        let failed = usage_error("status", "bad");
        let keys = |value: &Value| {
            value
                .as_object()
                .map(|map| map.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
        };
        assert_eq!(keys(&free), keys(&failed));
        assert_eq!(free["schema"], 1);
        assert!(HOLDER_KEYS.iter().all(|key| free[*key].is_null()));
        let broke = breaking(Some("x"), "free", Some(false), None, None, Duration::ZERO);
        assert_eq!(keys(&broke), keys(&usage_error("break", "bad")));
    }

    #[test]
    fn json_is_asked_for_before_the_separator_only() {
        let args = |list: &[&str]| {
            list.iter()
                .map(std::ffi::OsString::from)
                .collect::<Vec<_>>()
        };
        assert_eq!(requested(&args(&["status", "--json", "x"])), Some("status"));
        assert_eq!(requested(&args(&["break", "x", "--json"])), Some("break"));
        assert_eq!(requested(&args(&["status", "x"])), None);
        assert_eq!(requested(&args(&["run", "x", "--", "--json"])), None);
    }
}
