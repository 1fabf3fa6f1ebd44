//! The run directory's files: their names, and the counter's append-only
//! history (see the binary's docs for why it is kept that way).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::util::text;

/// The lock file, the counter, the stop flag, the long-pause files.
pub(super) const LOCK: &str = "counter.lock";
pub(super) const COUNTER: &str = "counter";
pub(super) const STOP: &str = "stop";
pub(super) const PAUSED_READ: &str = "paused.read";
pub(super) const PAUSED_GO: &str = "paused.go";
pub(super) const PAUSED_RESULT: &str = "paused.result";

/// How much of the counter's tail is read to find its last line.
const TAIL: u64 = 256;

/// The counter's value: the first field of its last line, 0 when empty.
pub(super) fn last_value(counter: &Path) -> Result<u64, String> {
    let mut file = match File::open(counter) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(format!("open the counter: {e}")),
    };
    let len = file.metadata().map_err(text)?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL)))
        .map_err(text)?;
    let mut tail = String::new();
    file.read_to_string(&mut tail)
        .map_err(|e| format!("read the counter: {e}"))?;
    if tail.is_empty() {
        return Ok(0);
    }
    if !tail.ends_with('\n') {
        return Err(format!("the counter's last line is incomplete: {tail:?}"));
    }
    let line = tail
        .trim_end_matches('\n')
        .rsplit('\n')
        .next()
        .unwrap_or("");
    line.split(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("the counter's last line is not a count: {line:?}"))
}

/// Appends `line` with one `write(2)` under `O_APPEND`.
pub(super) fn append(path: &Path, line: &str) -> Result<(), String> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    file.write_all(line.as_bytes())
        .map_err(|e| format!("append to {}: {e}", path.display()))
}

/// Writes `content` to `path` through a temporary file and a rename, so a
/// reader never sees half of it.
pub(super) fn write_atomically(path: &Path, content: &str) -> Result<(), String> {
    let temp = path.with_extension("tmp");
    fs::write(&temp, content).map_err(|e| format!("write {}: {e}", temp.display()))?;
    fs::rename(&temp, path).map_err(|e| format!("rename to {}: {e}", path.display()))
}
