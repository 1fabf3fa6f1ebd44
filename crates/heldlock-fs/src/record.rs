//! The text form of a [`LockRecord`] inside a lock file.
//!
//! One line: `<pid> <owner> <time>`, then optional ` key=value` fields, then
//! `\n`. `<time>` is RFC 3339 UTC with milliseconds and a `Z`, as JavaScript's
//! `Date.prototype.toISOString()` writes it (`2026-11-27T10:57:20.123Z`), so a
//! file written by the reference implementation
//! (`${process.pid} ${randomUUID()} ${new Date().toISOString()}\n`) decodes
//! as a record, and a reference process reading ours finds its owner id in the
//! second field.
//!
//! Anything that does not decode is a foreign lock: it is shown through
//! [`summary`] and only ever broken by age.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use heldlock_core::{LockRecord, OwnerId};

/// The latest instant the record's time format can express:
/// 9999-12-31T23:59:59.999Z. Later stamps are written as this one.
const LATEST_WRITABLE: Duration = Duration::from_millis(253_402_300_799_999);

/// The longest excerpt [`summary`] returns, in characters.
const SUMMARY_CHARS: usize = 80;

/// Encodes `record` as one line of text, ending with `\n`.
///
/// Fields that cannot be written so that [`decode`] reads them back
/// unchanged (see [`is_valid_field`]) are **left out** rather than
/// mangled: a field is a hint for liveness checks, and a wrong hint is worse
/// than none. Each omission is logged at `debug` level.
///
/// The time is written with millisecond precision (finer precision is
/// truncated) and clamped to the range the format can express: times before
/// 1970 are written as the Unix epoch, times after the year 9999 as its last
/// millisecond. Encoding never panics.
pub fn encode(record: &LockRecord) -> String {
    let mut line = format!(
        "{} {} {}",
        record.pid,
        record.owner,
        humantime::format_rfc3339_millis(writable_time(record.acquired_at))
    );
    for (key, value) in &record.fields {
        if is_valid_field(key, value) {
            line.push(' ');
            line.push_str(key);
            line.push('=');
            line.push_str(value);
        } else {
            tracing::debug!(
                key = key.escape_debug().to_string(),
                "lock record field left out: keys and values must not contain white space \
                 and keys must be non-empty and contain no '='"
            );
        }
    }
    line.push('\n');
    line
}

/// Decodes the content of a lock file.
///
/// Returns `None` for anything that is not a record: bytes that are not
/// UTF-8, fewer than three space-separated fields, a pid that is not a
/// decimal `u32`, an empty owner, a time that is not RFC 3339 UTC, a trailing
/// field that is not `key=value`, leading white space, or a second line.
/// Trailing white space (the final `\n`, a `\r\n`) is tolerated. Decoding
/// never panics, whatever the input.
pub fn decode(bytes: &[u8]) -> Option<LockRecord> {
    let parsed = parse(bytes)?;
    let owner = OwnerId::from_record(parsed.owner)?;
    let fields = parsed.fields.filter_map(split_field);
    Some(LockRecord::new(parsed.pid, owner, parsed.acquired_at).with_fields(fields))
}

/// What the content of a file at the lock path is, as far as breaking it
/// goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// No bytes: a holder that crashed (or is paused) between its create
    /// and its write.
    Empty,
    /// A complete record, heldlock's or the reference's.
    Record(LockRecord),
    /// The start of a record: a holder that crashed in the middle of its
    /// write.
    Partial,
    /// Anything else: not a lock file. It must never be broken.
    NotALock,
}

impl Content {
    /// Whether a file with this content is provably a lock, and so may be
    /// broken once stale.
    pub fn is_lock(&self) -> bool {
        !matches!(self, Content::NotALock)
    }
}

/// Tells a lock file from any other file by its content: empty, a complete
/// record ([`decode`]), a prefix of one that a holder could have left by
/// crashing in the middle of its single write, or none of these.
///
/// Both rules are strict so that ordinary files are not taken for locks:
/// the owner id must be a lower-case hyphenated UUID (what both heldlock and
/// the reference write), in a complete record too; a prefix must reach at
/// least the first group of the owner (`<pid> ` and eight hexadecimal
/// digits: a pid file, a year, `1 cafe` are not locks), and beyond that
/// follow the record's shape: the time `YYYY-MM-DDTHH:MM:SS[.fff]Z`, fields
/// `key=value`, every separator one space, no line break. A data file, a
/// script or a text note fails on its first bytes.
pub fn classify(bytes: &[u8]) -> Content {
    match decode(bytes) {
        Some(record) if is_lock_record(&record) => Content::Record(record),
        Some(_) => Content::NotALock,
        None => classify_undecoded(bytes),
    }
}

/// [`classify`] for a record that [`decode`] already read: whether it is a
/// lock's (its owner a UUID), so that a caller holding the decoded record
/// does not parse it again.
pub fn is_lock_record(record: &LockRecord) -> bool {
    is_uuid(record.owner.as_str())
}

/// [`classify`] for bytes that [`decode`] refused: empty, the start of a
/// record, or not a lock.
pub fn classify_undecoded(bytes: &[u8]) -> Content {
    if bytes.is_empty() {
        Content::Empty
    } else if is_record_prefix(bytes) {
        Content::Partial
    } else {
        Content::NotALock
    }
}

/// The shape of the record's time as written: `d` is a digit.
const TIME_SHAPE: &[u8] = b"dddd-dd-ddTdd:dd:dd";

/// Whether `bytes` are a proper prefix of some record [`encode`] or the
/// reference could write (see [`classify`]).
fn is_record_prefix(bytes: &[u8]) -> bool {
    // A write cut short may end inside a multi-byte character.
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) if e.error_len().is_none() => match std::str::from_utf8(&bytes[..e.valid_up_to()]) {
            Ok(text) => text,
            Err(_) => return false,
        },
        Err(_) => return false,
    };
    if text.contains(|c: char| c.is_whitespace() && c != ' ') {
        return false;
    }
    let tokens: Vec<&str> = text.split(' ').collect();
    let last = tokens.len() - 1;
    // Short of `<pid> <first owner group>`, too many ordinary files match.
    if tokens
        .get(1)
        .is_none_or(|owner| owner.len() < OWNER_PREFIX_MIN)
    {
        return false;
    }
    tokens.iter().enumerate().all(|(at, token)| {
        let complete = at < last;
        match at {
            0 => is_pid_prefix(token, complete),
            1 => is_owner_prefix(token, complete),
            2 => is_time_prefix(token, complete),
            _ if complete => split_field(token).is_some(),
            // A field cut short: its key may still lack its `=`.
            _ => match token.split_once('=') {
                Some((key, value)) => is_valid_field(key, value),
                None => !token.contains('='),
            },
        }
    })
}

fn is_pid_prefix(token: &str, complete: bool) -> bool {
    if complete {
        decode_pid(token).is_some()
    } else {
        token.len() <= 10 && token.bytes().all(|b| b.is_ascii_digit())
    }
}

/// The least of an owner id a prefix must show: its first group.
const OWNER_PREFIX_MIN: usize = 8;

/// The shape of an owner id: a lower-case hyphenated UUID; `h` is a
/// hexadecimal digit.
const UUID_SHAPE: &[u8] = b"hhhhhhhh-hhhh-hhhh-hhhh-hhhhhhhhhhhh";

fn is_owner_prefix(token: &str, complete: bool) -> bool {
    let fits = token.len() <= UUID_SHAPE.len()
        && token.bytes().zip(UUID_SHAPE).all(|(b, shape)| match shape {
            b'h' => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
            literal => b == *literal,
        });
    fits && (!complete || token.len() == UUID_SHAPE.len())
}

/// Whether `owner` is a lower-case hyphenated UUID.
fn is_uuid(owner: &str) -> bool {
    is_owner_prefix(owner, true)
}

fn is_time_prefix(token: &str, complete: bool) -> bool {
    if complete {
        // A complete time followed by a space must parse; `decode` would
        // have taken the whole line otherwise only because of later tokens.
        return humantime::parse_rfc3339(token).is_ok();
    }
    let bytes = token.as_bytes();
    let (head, tail) = bytes.split_at(bytes.len().min(TIME_SHAPE.len()));
    let head_fits = head.iter().zip(TIME_SHAPE).all(|(b, shape)| match shape {
        b'd' => b.is_ascii_digit(),
        literal => b == literal,
    });
    // After the seconds: an optional fraction, then `Z`.
    let tail_fits = match tail {
        [] => true,
        [b'Z'] => true,
        [b'.', rest @ ..] => {
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            digits <= 9 && matches!(&rest[digits..], [] | [b'Z'])
        }
        _ => false,
    };
    head_fits && tail_fits
}

/// Whether `bytes` decode as a record whose owner is `owner`: exactly what
/// `decode(bytes).is_some_and(|r| r.owner == *owner)` says, without building
/// the record (every release asks this twice).
pub fn names_owner(bytes: &[u8], owner: &OwnerId) -> bool {
    // `owner` is a valid owner id, so a token equal to it is one too.
    parse(bytes).is_some_and(|parsed| parsed.owner == owner.as_str())
}

/// A record checked by every rule of [`decode`] but the owner id's own,
/// borrowed from its text.
struct Parsed<'a> {
    pid: u32,
    owner: &'a str,
    acquired_at: SystemTime,
    /// The `key=value` tokens, every one valid.
    fields: std::str::Split<'a, char>,
}

fn parse(bytes: &[u8]) -> Option<Parsed<'_>> {
    let text = std::str::from_utf8(bytes).ok()?;
    // Fields are separated by exactly one space: a tab or a newline inside
    // the line ends up inside a token, where every token check refuses it.
    let mut tokens = text.trim_end().split(' ');
    let pid = decode_pid(tokens.next()?)?;
    let owner = tokens.next()?;
    let time = tokens.next()?;
    if time.contains(char::is_whitespace) {
        return None;
    }
    let acquired_at = humantime::parse_rfc3339(time).ok()?;
    tokens
        .clone()
        .all(|token| split_field(token).is_some())
        .then_some(Parsed {
            pid,
            owner,
            acquired_at,
            fields: tokens,
        })
}

/// Whether `key=value` can be written into a record and read back unchanged:
/// the key is non-empty and contains neither white space nor `=`; the value
/// contains no white space (it may be empty and may contain `=`).
pub fn is_valid_field(key: &str, value: &str) -> bool {
    !key.is_empty()
        && !key.contains(|c: char| c.is_whitespace() || c == '=')
        && !value.contains(char::is_whitespace)
}

/// A short printable excerpt of a lock file's content, for
/// [`Holder::Foreign`](heldlock_core::Holder::Foreign) and messages.
///
/// At most 80 characters. Invalid UTF-8 is replaced by `U+FFFD`; control
/// characters and the invisible characters that reorder or hide text in a
/// terminal are escaped (`\n`, `\u{202e}`); a cut excerpt ends with `…`.
pub fn summary(bytes: &[u8]) -> String {
    // Each byte yields at least one character, so this many bytes are always
    // enough to fill the excerpt; the cap bounds the work on large content.
    let head = &bytes[..bytes.len().min(SUMMARY_CHARS * 4)];
    let mut pieces = Vec::new();
    let mut chars = 0;
    for c in String::from_utf8_lossy(head).chars() {
        let piece = if needs_escape(c) {
            c.escape_default().to_string()
        } else {
            c.to_string()
        };
        chars += piece.chars().count();
        pieces.push(piece);
        if chars > SUMMARY_CHARS {
            break;
        }
    }
    let fits = chars <= SUMMARY_CHARS && head.len() == bytes.len();
    let budget = if fits {
        SUMMARY_CHARS
    } else {
        SUMMARY_CHARS - 1
    };
    let mut out = String::new();
    let mut used = 0;
    for piece in &pieces {
        let n = piece.chars().count();
        if used + n > budget {
            break;
        }
        out.push_str(piece);
        used += n;
    }
    if !fits {
        out.push('…');
    }
    out
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

fn writable_time(time: SystemTime) -> SystemTime {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) if since <= LATEST_WRITABLE => time,
        Ok(_) => UNIX_EPOCH + LATEST_WRITABLE,
        Err(_) => UNIX_EPOCH,
    }
}

fn decode_pid(token: &str) -> Option<u32> {
    // `u32::from_str` alone would also take "+42".
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    token.parse().ok()
}

fn split_field(token: &str) -> Option<(&str, &str)> {
    let (key, value) = token.split_once('=')?;
    is_valid_field(key, value).then_some((key, value))
}

/// FNV-1a's offset basis: the usual seed of [`stable_hash`].
pub(crate) const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a over `bytes` from `seed`: a hash that every process and every
/// build computes alike, for names that processes must agree on.
pub(crate) fn stable_hash(seed: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(seed, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

#[cfg(test)]
mod tests;
