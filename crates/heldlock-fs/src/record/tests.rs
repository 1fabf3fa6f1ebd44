//! Tests of the lock record's encoding, parsing and bounds.

use super::*;

const MAX_PROBE: usize = 4096;

fn record(fields: &[(&str, &str)]) -> LockRecord {
    let at = UNIX_EPOCH + Duration::from_millis(1_795_777_040_123);
    LockRecord::new(4242, OwnerId::random(), at).with_fields(fields.iter().copied())
}

#[test]
fn round_trip_without_and_with_fields() {
    for fields in [
        &[][..],
        &[("host", "db-1"), ("boot", "a=b"), ("empty", "")][..],
    ] {
        let original = record(fields);
        let text = encode(&original);
        assert!(text.ends_with('\n') && text.matches('\n').count() == 1);
        assert_eq!(decode(text.as_bytes()), Some(original));
    }
}

#[test]
fn encode_writes_the_reference_time_format() {
    let text = encode(&record(&[]));
    let time = text.trim_end().split(' ').nth(2);
    assert_eq!(time, Some("2026-11-27T10:57:20.123Z"));
}

#[test]
fn decode_accepts_exactly_what_the_reference_writes() {
    let text = "81234 0f8fad5b-d9cb-469f-a165-70867728950e 2026-11-27T10:57:20.123Z\n";
    let record = decode(text.as_bytes());
    let record = record.as_ref();
    assert_eq!(record.map(|r| r.pid), Some(81234));
    assert_eq!(
        record.map(|r| r.owner.as_str()),
        Some("0f8fad5b-d9cb-469f-a165-70867728950e")
    );
    assert_eq!(
        record.map(|r| r.acquired_at),
        Some(UNIX_EPOCH + Duration::from_millis(1_795_777_040_123))
    );
    assert_eq!(record.map(|r| r.fields.len()), Some(0));
}

#[test]
fn decode_tolerates_trailing_white_space_only() {
    let base = "1 owner 2026-11-27T10:57:20.123Z";
    for ok in ["", "\n", "\r\n", "  \n\n", "\t"] {
        assert!(decode(format!("{base}{ok}").as_bytes()).is_some(), "{ok:?}");
    }
    for bad in [
        format!(" {base}"),
        format!("{base}\n{base}\n"),
        base.replace(' ', "  "),
        base.replace(' ', "\t"),
    ] {
        assert_eq!(decode(bad.as_bytes()), None, "{bad:?}");
    }
}

#[test]
fn decode_refuses_malformed_records() {
    for bad in [
        "",
        "1 owner",
        "x owner 2026-11-27T10:57:20.123Z",
        "+1 owner 2026-11-27T10:57:20.123Z",
        "-1 owner 2026-11-27T10:57:20.123Z",
        "4294967296 owner 2026-11-27T10:57:20.123Z",
        "1  2026-11-27T10:57:20.123Z",
        "1 owner 2026-11-27 10:57:20.123Z",
        "1 owner 2026-11-27T10:57:20.123+02:00",
        "1 owner 2026-13-27T10:57:20.123Z",
        "1 owner yesterday",
        "1 owner 2026-11-27T10:57:20.123Z host",
        "1 owner 2026-11-27T10:57:20.123Z =v",
        "1 owner 2026-11-27T10:57:20.123Z k=v  x=y",
    ] {
        assert_eq!(decode(bad.as_bytes()), None, "{bad:?}");
    }
    assert_eq!(decode(b"1 \xff 2026-11-27T10:57:20.123Z"), None);
}

#[test]
fn encode_leaves_out_fields_it_cannot_write() {
    let original = record(&[
        ("ok", "1"),
        ("bad key", "1"),
        ("k=ey", "1"),
        ("", "1"),
        ("v", "two words"),
        ("nl", "a\nb"),
    ]);
    let decoded = decode(encode(&original).as_bytes());
    let fields = decoded.map(|r| r.fields);
    assert_eq!(fields, Some(vec![("ok".to_owned(), "1".to_owned())]));
}

#[test]
fn encode_clamps_times_it_cannot_express() {
    let mut early = record(&[]);
    early.acquired_at = UNIX_EPOCH - Duration::from_secs(1);
    assert!(encode(&early).contains(" 1970-01-01T00:00:00.000Z"));
    let mut late = record(&[]);
    late.acquired_at = UNIX_EPOCH + Duration::from_secs(400_000_000_000);
    let text = encode(&late);
    assert!(text.contains(" 9999-12-31T23:59:59.999Z"), "{text}");
    assert!(decode(text.as_bytes()).is_some());
}

#[test]
fn summary_is_short_printable_and_lossy() {
    assert_eq!(summary(b"held by cron\n"), "held by cron\\n");
    assert_eq!(summary(b"a\xffb\0"), "a\u{fffd}b\\u{0}");
    assert_eq!(summary("x\u{202e}y".as_bytes()), "x\\u{202e}y");
    let long = summary(&[b'z'; 10_000]);
    assert_eq!(long.chars().count(), 80);
    assert!(long.ends_with('…'));
    let exact = summary(&[b'z'; 80]);
    assert_eq!(exact, "z".repeat(80));
    let escapes = summary(&[0u8; 100]);
    assert!(escapes.chars().count() <= 80 && escapes.ends_with('…'));
    assert!(!escapes.contains('\0'));
}

/// A small deterministic generator (xorshift), so the junk is the same
/// on every run and a failure can be replayed.
fn junk(seed: &mut u64) -> Vec<u8> {
    let mut next = || {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    };
    let len = (next() % 96) as usize;
    let alphabet = b"0123456789 -:.TZ=+\n\t\xff\xc3abc";
    (0..len)
        .map(|_| {
            let r = next();
            if r % 4 == 0 {
                (r >> 8) as u8
            } else {
                alphabet[(r >> 8) as usize % alphabet.len()]
            }
        })
        .collect()
}

#[test]
fn decode_and_summary_never_panic_on_junk() {
    let valid = encode(&record(&[("host", "h")])).into_bytes();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut inputs: Vec<Vec<u8>> = (0..20_000).map(|_| junk(&mut seed)).collect();
    // Every prefix and every single-byte corruption of a valid record.
    for end in 0..=valid.len() {
        inputs.push(valid[..end].to_vec());
    }
    for at in 0..valid.len() {
        for byte in [0u8, b' ', b'\n', b'=', b'9', 0x80, 0xff] {
            let mut v = valid.clone();
            v[at] = byte;
            inputs.push(v);
        }
    }
    let mut decoded = 0;
    for input in &inputs {
        let parsed = decode(input);
        if let Some(r) = &parsed {
            decoded += 1;
            // Whatever decodes survives a round trip in every field, the
            // time to the millisecond (and clamped) as the format keeps it.
            let again = decode(encode(r).as_bytes());
            let again = again.as_ref();
            assert_eq!(again.map(|d| d.pid), Some(r.pid));
            assert_eq!(again.map(|d| &d.owner), Some(&r.owner));
            assert_eq!(again.map(|d| &d.fields), Some(&r.fields));
            let ms = |t: SystemTime| t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_millis());
            let expected = ms(r.acquired_at).map_or(0, |m| m.min(LATEST_WRITABLE.as_millis()));
            assert_eq!(again.and_then(|d| ms(d.acquired_at)), Some(expected));
            assert!(names_owner(input, &r.owner));
        }
        // `classify` agrees with `decode` and calls nothing else a record.
        match classify(input) {
            Content::Record(classified) => assert_eq!(Some(&classified), parsed.as_ref()),
            Content::Empty => assert!(input.is_empty()),
            Content::Partial => assert!(parsed.is_none()),
            Content::NotALock => {}
        }
        assert!(summary(input).chars().count() <= 80);
    }
    assert!(decoded > 0, "the corpus should contain some valid records");
}

#[test]
fn every_prefix_of_a_record_is_a_lock() {
    let reference = b"81234 0f8fad5b-d9cb-469f-a165-70867728950e 2026-11-27T10:57:20.123Z\n";
    let ours = encode(&record(&[("host", "db-1"), ("stale_ms", "30000")])).into_bytes();
    // Shorter than `<pid> <first owner group>` is not told from a
    // pid file: the reference's pid and a space take 6 bytes, and the
    // owner's first group 8 more.
    for full in [&reference[..], &ours[..]] {
        let shortest = full
            .iter()
            .position(|&b| b == b' ')
            .map_or(0, |at| at + 1 + 8);
        for end in shortest..=full.len() {
            let content = classify(&full[..end]);
            assert!(
                content.is_lock(),
                "{:?} -> {content:?}",
                String::from_utf8_lossy(&full[..end])
            );
        }
        assert!(matches!(classify(full), Content::Record(_)));
    }
    assert_eq!(classify(b""), Content::Empty);
    assert_eq!(classify(b"81234 0f8fad5b"), Content::Partial);
}

#[test]
fn ordinary_files_are_not_locks() {
    for other in [
        &b"data\n"[..],
        b"#!/bin/sh\nflock -en \"$0\" true\n",
        b"12345\n",
        b"hello world",
        b"{\"pid\": 1}",
        b"1 OWNER",
        b"1 0f8fad5b 2026-11-27T10:57:20.123Z\nmore\n",
        b"1 0f8fad5b 2026-11-27x",
        b"1 0f8fad5b 2026-11-27T10:57:20.123Z =v",
        b"1  0f8f",
        b"\xff\xfe",
        b"PK\x03\x04",
        // A pid file without its newline, a year, short hex words.
        b"12345",
        b"2024",
        b"1 cafe",
        b"3 added",
        b"42 0f8f",
        // A whole line in the record's shape whose owner is no UUID.
        b"42 done 2024-05-01T10:00:00Z",
        b"42 done 2024-05-01T10:00:00Z\n",
    ] {
        assert_eq!(
            classify(other),
            Content::NotALock,
            "{:?}",
            String::from_utf8_lossy(other)
        );
    }
    assert_eq!(classify(&[b'z'; MAX_PROBE]), Content::NotALock);
}

#[test]
fn names_owner_agrees_with_decode() {
    let record = record(&[("host", "h"), ("boot", "b")]);
    let valid = encode(&record).into_bytes();
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut inputs: Vec<Vec<u8>> = (0..5_000).map(|_| junk(&mut seed)).collect();
    for end in 0..=valid.len() {
        inputs.push(valid[..end].to_vec());
    }
    for at in 0..valid.len() {
        for byte in [0u8, b' ', b'\n', b'=', b'9', b'x', 0x80, 0xff] {
            let mut v = valid.clone();
            v[at] = byte;
            inputs.push(v);
        }
    }
    let mut owned = 0;
    for input in &inputs {
        let by_decode = decode(input).is_some_and(|r| r.owner == record.owner);
        assert_eq!(
            names_owner(input, &record.owner),
            by_decode,
            "{}",
            String::from_utf8_lossy(input)
        );
        owned += usize::from(by_decode);
    }
    assert!(owned > 1, "the corpus should name the owner more than once");
}
