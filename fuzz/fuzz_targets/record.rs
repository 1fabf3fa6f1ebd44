//! The lock record parser on arbitrary bytes: it never panics, what it
//! accepts survives an encode/decode round trip, and the printable summary
//! of a foreign lock stays short.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(record) = heldlock_fs::record::decode(data) {
        let encoded = heldlock_fs::record::encode(&record);
        let again = heldlock_fs::record::decode(encoded.as_bytes());
        assert_eq!(
            again.as_ref().map(|r| (r.pid, &r.owner)),
            Some((record.pid, &record.owner))
        );
    }
    let summary = heldlock_fs::record::summary(data);
    assert!(
        summary.chars().count() <= 200,
        "summary too long: {}",
        summary.len()
    );
});
