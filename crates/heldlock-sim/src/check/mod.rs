//! The invariant checker: what it observes (backend calls, holders, who
//! moves whose lock file), the checks it runs after every step, and how it
//! classifies what it finds.
//!
//! | # | invariant | checked |
//! | --- | --- | --- |
//! | 1 | at most one contender in its critical section whose ownership is not lost | after every step |
//! | 2 | a live holder's lock file is removed (and not put back) only by its owner | on every rename, link and unlink |
//! | 3 | a backend call that returns `Ok` leaves no trash; when every contender finished, no trash and no lock remain | after every call, at the end |
//! | 4 | after a holder crashes, a waiter holds the lock within `stale + poll` (+ allowance) | after every step |
//! | 5 | `refresh() == Ok(true)` only while the lock path names the caller's inode (at the call's last look at the path, its linearization point) | after every refresh |
//! | 6 | a lock file its mover could not read comes back to the path (`unread-break`) | on every rename, link, unlink and exchange |
//! | - | once a refresh reported the lock lost, `lost()` has fired | after every step |
//!
//! The file-system events are watched in `check/moves.rs`, the holder and
//! liveness checks live in `check/rules.rs`, and `check/verdicts.rs` classifies
//! the findings.
//!
//! A finding is **excused** when the protocol promises nothing: a holder
//! paused longer than `stale - heartbeat` (invariants 1 and 2). It is a **known race**
//! when its root cause is the race the protocol is known to have: the lock
//! path changed between a contender's last look at it and its `rename` (a
//! breaker's re-verify, or a releaser's ownership pre-check), so that the
//! rename moved a live holder's lock, and putting it back with `link`
//! failed because a third contender had created a lock in the empty path
//! meanwhile (or the mover died first). Everything else is **real**.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use heldlock_core::HeldLock;

use crate::fs::{Actor, Errno, OpKind};
use crate::world::Proc;

/// The invariants (and the two ways a run can fail to finish).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Invariant {
    /// 1: at most one contender in its critical section with ownership not lost.
    MutualExclusion,
    /// 2: a live holder's lock file is removed only by its owner.
    ForeignRemoval,
    /// 3: no trash (and, at the end, no lock) is left behind.
    LeftBehind,
    /// 4: a crashed holder's lock is taken over in time.
    Liveness,
    /// 5: `refresh() == Ok(true)` only while the path names the caller's inode.
    RefreshTruth,
    /// 6: a contender never moves or removes a lock file it could not read
    /// (`--hosts` with private files), and the protocol never swaps the
    /// lock path itself.
    UnreadBreak,
    /// A refresh reported the lock lost but `lost()` did not fire.
    LostSignal,
    /// Tasks remain but nothing can ever run again (a lost wake-up), or the
    /// run exceeded its step limit.
    Stuck,
    /// `acquire` returned more than `max_wait` plus `poll` after it was
    /// called, without a pause of its contender to excuse it.
    WaitBound,
    /// The serializer ran two tasks of one key at once, or out of call order.
    SerializerOrder,
    /// The serializer kept a key after its last task, or never woke a task.
    SerializerProgress,
}

impl Invariant {
    /// A short name, as the command line and reports use it.
    pub fn name(self) -> &'static str {
        match self {
            Invariant::MutualExclusion => "mutual-exclusion",
            Invariant::ForeignRemoval => "foreign-removal",
            Invariant::LeftBehind => "left-behind",
            Invariant::Liveness => "liveness",
            Invariant::RefreshTruth => "refresh-truth",
            Invariant::UnreadBreak => "unread-break",
            Invariant::LostSignal => "lost-signal",
            Invariant::Stuck => "stuck",
            Invariant::WaitBound => "wait-bound",
            Invariant::SerializerOrder => "serializer-order",
            Invariant::SerializerProgress => "serializer-progress",
        }
    }
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a finding counts; see the [module docs](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// A violation of a promise the protocol makes.
    Real,
    /// Caused by the known check-then-rename race.
    KnownRace,
    /// Caused by the known late loss signal: the holder's heartbeat failed
    /// (I/O errors) for longer than `stale - heartbeat`, a peer broke the
    /// lock as stale, and `lost()` had not fired yet (the heartbeat declares
    /// the loss only at a beat at least `stale` after the last *successful*
    /// refresh, up to one heartbeat after peers may break the lock).
    LateLoss,
    /// Outside what the protocol promises (a holder paused too long).
    Excused,
}

/// One finding of the checker, classified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant.
    pub invariant: Invariant,
    /// How it counts.
    pub class: Class,
    /// The step after which it was found.
    pub step: u64,
    /// The virtual time it was found at.
    pub at: Duration,
    /// What happened, in words.
    pub text: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let class = match self.class {
            Class::Real => "VIOLATION",
            Class::KnownRace => "known race",
            Class::LateLoss => "known late loss",
            Class::Excused => "excused",
        };
        write!(
            f,
            "{class} of {} at step {} ({:.3}s): {}",
            self.invariant,
            self.step,
            self.at.as_secs_f64(),
            self.text
        )
    }
}

/// The backend operations the probe reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CallKind {
    TryCreate,
    Inspect,
    Refresh,
    Break,
    Release,
}

/// One backend call in progress, by task.
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) kind: CallKind,
    pub(crate) contender: usize,
    pub(crate) started: Duration,
    /// The inode the last look at the lock path in this call found
    /// (`Some(None)`: nothing there); `None` if the call has not looked.
    check: Option<Option<u64>>,
    trash: Vec<PathBuf>,
    pub(crate) created: Option<u64>,
}

/// One acquisition: the lock inode a contender created and was told it holds.
#[derive(Debug)]
pub(crate) struct Hold {
    pub(crate) contender: usize,
    pub(crate) label: String,
    /// When the `try_create` call that made it began.
    call_started: Duration,
    /// When its release began (or its contender crashed): from then on it is
    /// no longer a live holder.
    ended_at: Option<Duration>,
    lost_reported: bool,
    /// When each stamp that made it to the file was taken (the acquisition,
    /// then each successful refresh's start).
    stamps: Vec<Duration>,
    /// When refreshes failed with an error.
    errors: Vec<Duration>,
}

#[derive(Debug)]
struct Cs {
    ino: u64,
    held: Arc<HeldLock>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Pending,
    Restored,
    Removed,
}

/// A contender's lock inode moved off (or replaced at) the lock path by
/// another contender. Whether it counts (its holder was live and not
/// excused) is decided at the end, since the victim may still be inside the
/// `try_create` that will report it held.
#[derive(Debug)]
struct Eviction {
    victim: u64,
    /// Renamed over or unlinked at the path, rather than moved to trash.
    replaced: bool,
    mover: Actor,
    kind: Option<CallKind>,
    step: u64,
    at: Duration,
    check: Option<Option<u64>>,
    /// Whether putting it back was tried and failed (and with what).
    restore_failed: Option<Errno>,
    /// Another lock was created at the path while this one was away.
    created_meanwhile: bool,
    /// The mover could not read it (private files on another host).
    unread: bool,
    outcome: Outcome,
}

impl Eviction {
    /// The known check-then-rename race: the path changed between the
    /// mover's last look and its rename, and while the moved lock was away
    /// a third contender created a lock in the empty path (so putting it
    /// back failed, or came after that lock's holder had run), or the mover
    /// died or failed before putting it back.
    fn known_race(&self) -> bool {
        let after_check = matches!(self.check, Some(Some(seen)) if seen != self.victim);
        let window_used = self.created_meanwhile
            || self.restore_failed.is_some()
            || self.outcome == Outcome::Pending;
        // Unlinking what it moved without trying to put it back is not the
        // race: it is destroying a lock.
        let tried_to_restore = self.outcome != Outcome::Removed || self.restore_failed.is_some();
        after_check && window_used && tried_to_restore && !self.replaced
    }
}

#[derive(Debug)]
struct Finding {
    invariant: Invariant,
    step: u64,
    at: Duration,
    text: String,
    /// The lock inodes concerned.
    inos: Vec<u64>,
    /// Already excused when found.
    excused: bool,
}

#[derive(Debug)]
struct Obligation {
    crashed: usize,
    /// The crashed holder's lock file.
    ino: u64,
    at: Duration,
    deadline: Duration,
    done: bool,
}

/// The timings the checker judges by.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// A pause longer than this (`stale - heartbeat`) excuses its holder.
    pub(crate) long_pause: Duration,
    /// Pauses closer than this (a heartbeat) count as one.
    pub(crate) merge_gap: Duration,
    /// How long after a holder's crash a waiter must hold the lock.
    pub(crate) liveness: Duration,
    /// `max_wait`.
    pub(crate) max_wait: Duration,
    /// `poll`: a step begun within it of the deadline may run that long.
    pub(crate) poll: Duration,
}

/// Counts of what a run exercised, by name (`crash`, `io.EIO.rename`, ...).
pub type Counters = BTreeMap<String, u64>;

/// What the checker has seen so far; see the [module docs](self).
#[derive(Debug)]
pub(crate) struct Observer {
    pub(crate) limits: Limits,
    heartbeat_tasks: BTreeSet<u64>,
    calls: BTreeMap<u64, Call>,
    holds: BTreeMap<u64, Hold>,
    owners: BTreeMap<String, u64>,
    acquisitions: Vec<usize>,
    cs: Vec<Option<Cs>>,
    evictions: Vec<Eviction>,
    findings: Vec<Finding>,
    obligations: Vec<Obligation>,
    pub(crate) acquiring: Vec<Option<Duration>>,
    fault_times: Vec<Duration>,
    pub(crate) counters: Counters,
    pub(crate) io_faults: u64,
    pub(crate) intruded: bool,
    pairs_seen: BTreeSet<(u64, u64)>,
    lost_seen: BTreeSet<u64>,
    /// When each `try_create` reported `Created`.
    taken_over: Vec<Duration>,
}

impl Observer {
    pub(crate) fn new(contenders: usize) -> Self {
        Observer {
            limits: Limits {
                long_pause: Duration::MAX,
                merge_gap: Duration::ZERO,
                liveness: Duration::MAX,
                max_wait: Duration::ZERO,
                poll: Duration::ZERO,
            },
            heartbeat_tasks: BTreeSet::new(),
            calls: BTreeMap::new(),
            holds: BTreeMap::new(),
            owners: BTreeMap::new(),
            acquisitions: vec![0; contenders],
            cs: (0..contenders).map(|_| None).collect(),
            evictions: Vec::new(),
            findings: Vec::new(),
            obligations: Vec::new(),
            acquiring: vec![None; contenders],
            fault_times: Vec::new(),
            counters: Counters::new(),
            io_faults: 0,
            intruded: false,
            pairs_seen: BTreeSet::new(),
            lost_seen: BTreeSet::new(),
            taken_over: Vec::new(),
        }
    }

    pub(crate) fn bump(&mut self, what: &str) {
        *self.counters.entry(what.to_owned()).or_default() += 1;
    }

    pub(crate) fn is_heartbeat(&self, task: u64) -> bool {
        self.heartbeat_tasks.contains(&task)
    }

    pub(crate) fn adopt_heartbeat(&mut self, task: u64) {
        self.heartbeat_tasks.insert(task);
    }

    pub(crate) fn note_fault(&mut self, at: Duration, what: &str) {
        self.fault_times.push(at);
        self.bump(what);
    }

    pub(crate) fn note_io_fault(&mut self, op: OpKind, errno: Errno, at: Duration) {
        self.io_faults += 1;
        self.note_fault(at, &format!("io.{errno}.{}", op.name()));
    }

    pub(crate) fn hold_of(&self, owner: &str) -> Option<u64> {
        self.owners.get(owner).copied()
    }

    pub(crate) fn label_of(&self, ino: u64) -> Option<&str> {
        self.holds.get(&ino).map(|h| h.label.as_str())
    }

    pub(crate) fn begin_call(
        &mut self,
        task: u64,
        kind: CallKind,
        contender: usize,
        now: Duration,
    ) {
        self.calls.insert(
            task,
            Call {
                kind,
                contender,
                started: now,
                check: None,
                trash: Vec::new(),
                created: None,
            },
        );
    }

    pub(crate) fn end_call(&mut self, task: u64) -> Option<Call> {
        self.calls.remove(&task)
    }

    /// A contender crashed: its calls stop, its holds end.
    pub(crate) fn crashed(&mut self, contender: usize) {
        self.calls.retain(|_, call| call.contender != contender);
        self.acquiring[contender] = None;
    }

    /// Takes the critical-section entry of `contender` (to be dropped with no
    /// lock held).
    pub(crate) fn leave_cs(&mut self, contender: usize) -> Option<Arc<HeldLock>> {
        self.cs
            .get_mut(contender)
            .and_then(Option::take)
            .map(|cs| cs.held)
    }

    /// Every critical-section entry (the end of a run).
    pub(crate) fn take_all_cs(&mut self) -> Vec<Arc<HeldLock>> {
        self.cs
            .iter_mut()
            .filter_map(Option::take)
            .map(|cs| cs.held)
            .collect()
    }

    fn find(
        &mut self,
        invariant: Invariant,
        step: u64,
        at: Duration,
        text: String,
        inos: Vec<u64>,
    ) {
        self.findings.push(Finding {
            invariant,
            step,
            at,
            text,
            inos,
            excused: false,
        });
    }

    /// Whether `contender` was stalled by pauses for longer than
    /// `stale - heartbeat` at some point overlapping `from..=to`. Pauses less
    /// than a heartbeat apart count as one: in between, the heartbeat gets
    /// a few steps at most, not a refresh cycle.
    fn long_pause_between(
        &self,
        procs: &[Proc],
        contender: usize,
        from: Duration,
        to: Duration,
    ) -> bool {
        let Some(proc) = procs.get(contender) else {
            return false;
        };
        let mut pauses = proc.pauses.clone();
        pauses.sort_unstable();
        let mut merged: Vec<(Duration, Duration)> = Vec::new();
        for (start, len) in pauses {
            let end = start + len;
            match merged.last_mut() {
                Some((_, last_end)) if start < *last_end + self.limits.merge_gap => {
                    *last_end = (*last_end).max(end);
                }
                _ => merged.push((start, end)),
            }
        }
        merged
            .iter()
            .any(|&(start, end)| end - start > self.limits.long_pause && start <= to && end >= from)
    }

    /// Whether `contender` was paused at any moment of `from..=to`.
    fn paused_between(procs: &[Proc], contender: usize, from: Duration, to: Duration) -> bool {
        procs.get(contender).is_some_and(|p| {
            p.pauses
                .iter()
                .any(|&(start, len)| start <= to && start + len >= from)
        })
    }

    /// Whether the holder of `ino` was paused too long between its
    /// `try_create` and `at`.
    fn excused(&self, procs: &[Proc], ino: u64, at: Duration) -> bool {
        self.holds
            .get(&ino)
            .is_some_and(|h| self.long_pause_between(procs, h.contender, h.call_started, at))
    }

    /// Whether `ino` was (or was being made into) the lock of a live holder
    /// at `at`, whose loss the protocol promises to prevent.
    fn protected_at(&self, procs: &[Proc], ino: u64, at: Duration) -> bool {
        let Some(hold) = self.holds.get(&ino) else {
            return false;
        };
        let crashed = procs
            .get(hold.contender)
            .and_then(|p| p.crashed_at)
            .is_some_and(|t| t <= at);
        hold.call_started <= at
            && hold.ended_at.is_none_or(|t| t > at)
            && !crashed
            && !self.excused(procs, ino, at)
    }

    /// The known late loss signal: `e` broke a lock that really went
    /// unrefreshed (its holder's refreshes failing) for longer than
    /// `stale - heartbeat`, after checking that very lock.
    fn late_loss(&self, e: &Eviction) -> bool {
        let Some(hold) = self.holds.get(&e.victim) else {
            return false;
        };
        let Some(last) = hold.stamps.iter().copied().filter(|&t| t <= e.at).max() else {
            return false;
        };
        let failed = hold.errors.iter().any(|&t| t > last && t <= e.at);
        e.check == Some(Some(e.victim))
            && failed
            && e.at.saturating_sub(last) > self.limits.long_pause
    }
}

mod moves;
mod rules;
mod verdicts;
