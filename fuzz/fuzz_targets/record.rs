//! The lock record parser on arbitrary bytes: it never panics; what it
//! accepts survives an encode/decode round trip in every field (the time to
//! the millisecond the format keeps); `names_owner` agrees with `decode`;
//! `classify` agrees with `decode` and never calls a non-lock a lock record;
//! and the printable summary stays within its 80 characters.
#![no_main]

use std::time::UNIX_EPOCH;

use heldlock_fs::record::{self, Content};
use libfuzzer_sys::fuzz_target;

fn millis(time: std::time::SystemTime) -> Option<u128> {
    time.duration_since(UNIX_EPOCH).ok().map(|d| d.as_millis())
}

fuzz_target!(|data: &[u8]| {
    let decoded = record::decode(data);
    if let Some(record) = &decoded {
        let encoded = record::encode(record);
        let again = record::decode(encoded.as_bytes());
        let again = again.as_ref();
        assert_eq!(again.map(|r| r.pid), Some(record.pid));
        assert_eq!(again.map(|r| &r.owner), Some(&record.owner));
        assert_eq!(again.map(|r| &r.fields), Some(&record.fields));
        // Times before 1970 are written as 1970, after 9999 as its end.
        let expected = millis(record.acquired_at).map_or(0, |ms| ms.min(253_402_300_799_999));
        assert_eq!(again.and_then(|r| millis(r.acquired_at)), Some(expected));
        assert!(record::names_owner(data, &record.owner));
    }
    match record::classify(data) {
        Content::Record(classified) => assert_eq!(Some(&classified), decoded.as_ref()),
        Content::Empty => assert!(data.is_empty()),
        Content::Partial => assert!(decoded.is_none()),
        Content::NotALock => {}
    }
    let summary = record::summary(data);
    assert!(
        summary.chars().count() <= 80,
        "summary too long: {} characters",
        summary.chars().count()
    );
});
