//! The account of a run: the counter against the commits the processes'
//! logs name (lost or doubled increments), and the files left beside the
//! lock.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io;
use std::path::Path;

use crate::files::{COUNTER, LOCK};
use crate::observe::lock_pid;
use crate::util::text;

#[derive(Debug, Default)]
pub(super) struct Account {
    /// The counter's value: its last line's.
    pub(super) counter: u64,
    /// Lines in the counter.
    pub(super) commits: u64,
    /// Commits some worker logged.
    pub(super) logged: u64,
    /// Commits whose log line a SIGKILL swallowed.
    pub(super) unlogged_after_kill: u64,
    /// Writes skipped because `refresh()` said the lock was lost.
    pub(super) skipped: u64,
    /// (incarnation, seq, epoch ms) of each skipped write.
    pub(super) skips: Vec<(u64, u64, u64)>,
    /// Increments lost: logged but not in the counter, or values missing
    /// from it.
    pub(super) lost: u64,
    /// Increments doubled: a value written twice (two holders read the
    /// same value), or one commit in the counter twice.
    pub(super) doubled: u64,
    pub(super) problems: Vec<String>,
}

/// Reads the counter and every incarnation's log and checks them against
/// each other; see the module docs.
pub(super) fn account(dir: &Path, incarnations: u64, killed: &BTreeMap<u64, i32>) -> Account {
    let mut acc = Account::default();
    let text = match fs::read_to_string(dir.join(COUNTER)) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            acc.problems.push(format!("read the counter: {e}"));
            return acc;
        }
    };
    // (incarnation, seq) -> value, from the counter.
    let mut journal: HashMap<(u64, u64), u64> = HashMap::new();
    let mut expected = 1u64;
    for line in text.lines() {
        let fields: Vec<u64> = line.split(' ').filter_map(|f| f.parse().ok()).collect();
        let [value, inc, seq] = fields[..] else {
            acc.problems
                .push(format!("malformed counter line {line:?}"));
            continue;
        };
        if value < expected {
            acc.doubled += 1;
        } else if value > expected {
            acc.lost += value - expected;
        }
        if value != expected {
            acc.problems.push(if value < expected {
                format!("value {value} written twice (again by incarnation {inc} seq {seq})")
            } else {
                format!("value {expected} missing before {value}")
            });
        }
        expected = value + 1;
        if journal.insert((inc, seq), value).is_some() {
            acc.doubled += 1;
            acc.problems
                .push(format!("incarnation {inc} seq {seq} committed twice"));
        }
        acc.commits += 1;
        acc.counter = value;
    }
    // The log of each incarnation: its seqs run 0, 1, 2, ...
    let mut logged: HashSet<(u64, u64)> = HashSet::new();
    let mut next_seq: HashMap<u64, u64> = HashMap::new();
    for inc in 0..incarnations {
        let log = match fs::read_to_string(dir.join(format!("log.{inc}"))) {
            Ok(log) => log,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                acc.problems.push(format!("read log.{inc}: {e}"));
                continue;
            }
        };
        let mut seqs = 0u64;
        for line in log.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let at: u64 = fields.get(3).and_then(|a| a.parse().ok()).unwrap_or(0);
            let parsed = match fields[..] {
                [kind, seq, value] | [kind, seq, value, _] => seq
                    .parse::<u64>()
                    .ok()
                    .zip(value.parse::<u64>().ok())
                    .map(|(s, v)| (kind, s, v)),
                _ => None,
            };
            let Some((kind, seq, value)) = parsed else {
                acc.problems
                    .push(format!("malformed line {line:?} in log.{inc}"));
                continue;
            };
            if seq != seqs {
                acc.problems
                    .push(format!("log.{inc}: seq {seq} where {seqs} was due"));
            }
            seqs = seq + 1;
            match kind {
                "commit" => {
                    acc.logged += 1;
                    logged.insert((inc, seq));
                    match journal.get(&(inc, seq)) {
                        Some(&v) if v == value => {}
                        Some(&v) => acc.problems.push(format!(
                            "incarnation {inc} seq {seq} logged value {value}, the counter has {v}"
                        )),
                        None => {
                            acc.lost += 1;
                            acc.problems.push(format!(
                            "lost: incarnation {inc} seq {seq} logged value {value}, not in the counter"
                        ));
                        }
                    }
                }
                "skip" => {
                    acc.skipped += 1;
                    acc.skips.push((inc, seq, at));
                }
                _ => acc
                    .problems
                    .push(format!("unknown log line {line:?} in log.{inc}")),
            }
        }
        next_seq.insert(inc, seqs);
    }
    for (&(inc, seq), &value) in &journal {
        if logged.contains(&(inc, seq)) {
            continue;
        }
        let explained =
            killed.contains_key(&inc) && next_seq.get(&inc).copied().unwrap_or(0) == seq;
        if explained {
            acc.unlogged_after_kill += 1;
        } else {
            acc.problems.push(format!(
                "value {value} by incarnation {inc} seq {seq} is in no log and no kill explains it"
            ));
        }
    }
    if acc.counter != acc.logged + acc.unlogged_after_kill {
        acc.problems.push(format!(
            "counter {} != {} logged + {} unlogged-after-kill commits",
            acc.counter, acc.logged, acc.unlogged_after_kill
        ));
    }
    acc
}

/// Every file the protocol left beside the lock: (explained by a process
/// killed mid-step, not). The protocol names them `<lock>.releasing.<id>`
/// and `<lock>.breaking.<id>` (trash), `<lock>.break.<hash>` (a break
/// marker) and `<lock>.displaced.<id>` (a file that is not a lock, moved
/// off the lock path by mistake); a step that completes leaves none.
pub(super) fn trash(
    dir: &Path,
    killed: &BTreeMap<u64, i32>,
) -> Result<(Vec<String>, Vec<String>), String> {
    let killed_pids: HashSet<i32> = killed.values().copied().collect();
    let mut explained = Vec::new();
    let mut unexplained = Vec::new();
    for entry in fs::read_dir(dir).map_err(text)? {
        let entry = entry.map_err(text)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(kind) = name
            .strip_prefix(LOCK)
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|rest| rest.split_once('.'))
            .map(|(kind, _)| kind)
        else {
            continue;
        };
        let empty = fs::symlink_metadata(entry.path()).is_ok_and(|m| m.is_file() && m.len() == 0);
        let by_a_kill = match kind {
            // A process killed between the rename to trash and the unlink
            // leaves the lock it was removing there: its own (releasing), or a
            // dead holder's (breaking), or an empty one of a killed creator.
            "breaking" | "releasing" => {
                let pid = lock_pid(&entry.path());
                pid.is_some_and(|p| killed_pids.contains(&p)) || (empty && !killed.is_empty())
            }
            // A breaker killed between making its marker (an empty file)
            // and removing it leaves it; it expires, or the sweep takes it
            // once older than `stale`, but the run may end first. Workers
            // that stop cleanly, or pause, remove their own.
            "break" => empty && !killed.is_empty(),
            // Only locks are ever at the lock path here: a displaced file
            // (or anything else the protocol does not make) is a problem.
            "displaced" => false,
            _ => continue,
        };
        if by_a_kill {
            explained.push(name);
        } else {
            unexplained.push(name);
        }
    }
    Ok((explained, unexplained))
}

pub(super) fn count_commits(dir: &Path, inc: u64) -> usize {
    fs::read_to_string(dir.join(format!("log.{inc}")))
        .map(|log| log.lines().filter(|l| l.starts_with("commit ")).count())
        .unwrap_or(0)
}

/// A run's verdict from the problems its checks found: each printed, and
/// an error counting them, or `Ok` when there are none.
pub(crate) fn verdict(problems: &[String]) -> Result<(), String> {
    if problems.is_empty() {
        return Ok(());
    }
    for problem in problems {
        println!("problem: {problem}");
    }
    Err(format!("{} problem(s)", problems.len()))
}
