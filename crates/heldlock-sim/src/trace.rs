//! The trace of one run: every step, fault, backend call and finding, with
//! random names (trash suffixes, owner ids) replaced by stable short ones so
//! that two runs of one seed print the same text.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// The printable record of one run. Recording is off in campaigns (it costs
/// allocations); a failing seed is run again with it on.
#[derive(Debug, Default)]
pub(crate) struct Trace {
    enabled: bool,
    lines: Vec<String>,
    /// Random file names, in order of first appearance.
    names: BTreeMap<String, String>,
    /// Owner ids (UUIDs) and the short name of the acquisition they belong to.
    owners: BTreeMap<String, String>,
    lock_name: String,
}

impl Trace {
    pub(crate) fn new(enabled: bool, lock_name: String) -> Self {
        Trace {
            enabled,
            lock_name,
            ..Trace::default()
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// Remembers the short name of an owner id.
    pub(crate) fn owner(&mut self, owner: &str, short: String) {
        if self.enabled {
            self.owners.insert(owner.to_owned(), short);
        }
    }

    /// A path as the trace shows it: names in the lock's directory by file
    /// name alone, the random part of trash names numbered.
    pub(crate) fn path(&mut self, path: &Path) -> String {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            return path.display().to_string();
        };
        if name == self.lock_name {
            return name.to_owned();
        }
        for purpose in ["breaking", "releasing", "break"] {
            let prefix = format!("{}.{purpose}.", self.lock_name);
            if let Some(random) = name.strip_prefix(&prefix) {
                let next = self.names.len() + 1;
                let short = self
                    .names
                    .entry(random.to_owned())
                    .or_insert_with(|| format!("#{next}"));
                return format!("{}.{purpose}.{short}", self.lock_name);
            }
        }
        path.display().to_string()
    }

    /// Adds one line.
    pub(crate) fn line(&mut self, step: u64, at: Duration, who: &str, what: &str) {
        if !self.enabled {
            return;
        }
        let mut line = String::new();
        let _ = write!(line, "{step:>6} {:>9.3}s {who:<6} {what}", at.as_secs_f64());
        self.lines.push(line);
    }

    /// Replaces owner ids in `text` by their short names.
    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (owner, short) in &self.owners {
            if out.contains(owner.as_str()) {
                out = out.replace(owner.as_str(), short);
            }
        }
        out
    }

    pub(crate) fn take_lines(&mut self) -> Vec<String> {
        std::mem::take(&mut self.lines)
    }
}
