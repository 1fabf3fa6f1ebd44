//! The lock key's value: the holder's record and its last refresh stamp,
//! as one JSON object, so that `etcdctl get` shows who holds a lock.
//!
//! ```text
//! {"heldlock":1,"pid":4101,"owner":"5f0c…","acquired_at_ns":1767225600000000000,
//!  "refreshed_at_ns":1767225610000000000,"fields":[["stale_ms","30000"]]}
//! ```
//!
//! Stamps are nanoseconds since the Unix epoch, so every stamp the core
//! gives comes back exactly (the conformance suite compares them exactly).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use heldlock_core::{LockRecord, OwnerId};
use serde_json::{Value, json};

/// The format version written in `"heldlock"`.
const VERSION: u64 = 1;

/// The longest excerpt of a foreign value shown in messages.
const SUMMARY_CHARS: usize = 60;

/// What a value says, when it is one of ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Decoded {
    pub(crate) record: LockRecord,
    pub(crate) refreshed_at: SystemTime,
}

/// The value for `record`, last refreshed at `refreshed_at`.
pub(crate) fn encode(record: &LockRecord, refreshed_at: SystemTime) -> Vec<u8> {
    let fields: Vec<[&str; 2]> = record
        .fields
        .iter()
        .map(|(k, v)| [k.as_str(), v.as_str()])
        .collect();
    json!({
        "heldlock": VERSION,
        "pid": record.pid,
        "owner": record.owner.as_str(),
        "acquired_at_ns": nanos(record.acquired_at),
        "refreshed_at_ns": nanos(refreshed_at),
        "fields": fields,
    })
    .to_string()
    .into_bytes()
}

/// The record and stamp in `bytes`, or `None` when it is not a value this
/// crate wrote (someone else's key, or a newer format).
pub(crate) fn decode(bytes: &[u8]) -> Option<Decoded> {
    let value: Value = serde_json::from_slice(bytes).ok()?;
    if value.get("heldlock")?.as_u64()? != VERSION {
        return None;
    }
    let pid = u32::try_from(value.get("pid")?.as_u64()?).ok()?;
    let owner = OwnerId::from_record(value.get("owner")?.as_str()?)?;
    let acquired_at = time(value.get("acquired_at_ns")?)?;
    let refreshed_at = time(value.get("refreshed_at_ns")?)?;
    let mut fields = Vec::new();
    for pair in value.get("fields")?.as_array()? {
        match pair.as_array()?.as_slice() {
            [k, v] => fields.push((k.as_str()?.to_owned(), v.as_str()?.to_owned())),
            _ => return None,
        }
    }
    Some(Decoded {
        record: LockRecord::new(pid, owner, acquired_at).with_fields(fields),
        refreshed_at,
    })
}

/// A short, printable excerpt of a value that is not ours, for messages.
pub(crate) fn summary(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out: String = text
        .chars()
        .take(SUMMARY_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().count() > SUMMARY_CHARS {
        out.push('…');
    }
    out
}

/// A time as nanoseconds since the epoch; a clock before 1970 writes 0 and
/// one past 2554 saturates (neither is a time a live host has).
fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn time(value: &Value) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_nanos(value.as_u64()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> LockRecord {
        LockRecord::new(
            4101,
            OwnerId::random(),
            UNIX_EPOCH + Duration::new(1_767_225_600, 123_456_789),
        )
        .with_fields([("stale_ms", "30000"), ("host", "a \"quoted\" name")])
    }

    #[test]
    fn a_value_reads_back_exactly() {
        let record = record();
        let refreshed = record.acquired_at + Duration::from_nanos(1);
        let bytes = encode(&record, refreshed);
        assert_eq!(
            decode(&bytes),
            Some(Decoded {
                record: record.clone(),
                refreshed_at: refreshed
            })
        );
    }

    #[test]
    fn foreign_values_are_not_ours() {
        for foreign in [
            &b""[..],
            b"held by someone",
            b"{\"heldlock\":2}",
            b"{\"heldlock\":1,\"pid\":-1}",
        ] {
            assert_eq!(decode(foreign), None, "{foreign:?}");
        }
        assert_eq!(summary(b"line\none"), "line\\none");
        assert_eq!(summary(&[b'x'; 100]).chars().count(), SUMMARY_CHARS + 1);
    }
}
