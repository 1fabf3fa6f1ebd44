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
//! | - | once a refresh reported the lock lost, `lost()` has fired | after every step |
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
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use heldlock_core::HeldLock;

use crate::fs::{Actor, Errno, OpKind};
use crate::world::{Proc, State};

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

    /// Classifies every finding of the run.
    pub(crate) fn verdicts(&self, procs: &[Proc]) -> Vec<Violation> {
        let counted = |e: &Eviction| self.protected_at(procs, e.victim, e.at);
        let known = |ino: u64| {
            self.evictions
                .iter()
                .any(|e| e.victim == ino && counted(e) && e.known_race())
        };
        let late = |ino: u64| {
            self.evictions
                .iter()
                .any(|e| e.victim == ino && counted(e) && self.late_loss(e))
        };
        let mut out = Vec::new();
        for f in &self.findings {
            let class = if f.excused {
                Class::Excused
            } else if f.inos.iter().any(|&ino| known(ino)) {
                Class::KnownRace
            } else if f.inos.iter().any(|&ino| late(ino)) {
                Class::LateLoss
            } else {
                Class::Real
            };
            out.push(Violation {
                invariant: f.invariant,
                class,
                step: f.step,
                at: f.at,
                text: f.text.clone(),
            });
        }
        // 6: a lock its mover could not read must come back, whether its
        // holder lives or not (only the check-then-rename race may keep it
        // away, as it may any lock).
        for e in self.evictions.iter().filter(|e| e.unread) {
            if e.outcome == Outcome::Restored && !e.replaced {
                continue;
            }
            out.push(Violation {
                invariant: Invariant::UnreadBreak,
                class: if e.known_race() {
                    Class::KnownRace
                } else {
                    Class::Real
                },
                step: e.step,
                at: e.at,
                text: format!(
                    "{:?} ({:?}) took {} off the lock path, a file it cannot read, and did not put it back",
                    e.mover,
                    e.kind,
                    self.label_of(e.victim).unwrap_or("a lock")
                ),
            });
        }
        for e in self.evictions.iter().filter(|e| counted(e)) {
            if e.outcome == Outcome::Restored && !e.replaced {
                continue;
            }
            let mover = match e.mover {
                Actor::Contender(c) => format!("c{c}"),
                other => format!("{other:?}"),
            };
            let label = self.label_of(e.victim).unwrap_or("?");
            if e.replaced {
                out.push(Violation {
                    invariant: Invariant::ForeignRemoval,
                    class: Class::Real,
                    step: e.step,
                    at: e.at,
                    text: format!(
                        "{mover} ({:?}) destroyed live holder {label}'s lock (ino {}) at the lock path",
                        e.kind.map_or("no call".to_owned(), |k| format!("{k:?}")),
                        e.victim
                    ),
                });
                continue;
            }
            let how = match (e.outcome, e.restore_failed) {
                (Outcome::Pending, _) => "left it in trash".to_owned(),
                (_, Some(errno)) => format!("could not link it back ({errno}) and unlinked it"),
                _ => "unlinked it without putting it back".to_owned(),
            };
            let check = match e.check {
                None => "without looking first".to_owned(),
                Some(None) => "after seeing no lock".to_owned(),
                Some(Some(ino)) if ino == e.victim => "after seeing that very lock".to_owned(),
                Some(Some(ino)) => format!("after seeing ino {ino} there"),
            };
            out.push(Violation {
                invariant: Invariant::ForeignRemoval,
                class: if e.known_race() {
                    Class::KnownRace
                } else if self.late_loss(e) {
                    Class::LateLoss
                } else {
                    Class::Real
                },
                step: e.step,
                at: e.at,
                text: format!(
                    "{mover} ({:?}) renamed live holder {label}'s lock (ino {}) away {check}, then {how}",
                    e.kind.map_or("no call".to_owned(), |k| format!("{k:?}")),
                    e.victim
                ),
            });
        }
        out.sort_by_key(|v| (v.step, v.invariant));
        out
    }
}

impl State {
    fn is_lock(&self, path: &Path) -> bool {
        path == self.lock_path
    }

    fn current_call(&mut self) -> Option<&mut Call> {
        let task = self.current?.task;
        self.obs.calls.get_mut(&task)
    }

    /// A human description of an inode for traces: whose lock it is.
    pub(crate) fn describe(&self, ino: u64) -> String {
        if let Some(label) = self.obs.label_of(ino) {
            return format!("ino {ino} ({label}'s lock)");
        }
        match self.tree.inode(ino).map(|i| i.creator) {
            Some(Actor::Contender(c)) => format!("ino {ino} (made by c{c})"),
            Some(Actor::Setup) => format!("ino {ino} (a dead process's lock)"),
            Some(Actor::Intruder) => format!("ino {ino} (an intruder's)"),
            None => format!("ino {ino}"),
        }
    }

    pub(crate) fn seen_lookup(&mut self, path: &Path, result: &Result<u64, Errno>) {
        if self.is_lock(path) {
            let seen = result.ok();
            if let Some(call) = self.current_call() {
                call.check = Some(seen);
            }
        }
    }

    pub(crate) fn seen_create(&mut self, path: &Path, result: &Result<u64, Errno>) {
        if let (true, Ok(ino)) = (self.is_lock(path), result) {
            let ino = *ino;
            for e in &mut self.obs.evictions {
                if e.outcome == Outcome::Pending && !e.replaced {
                    e.created_meanwhile = true;
                }
            }
            if let Some(call) = self.current_call() {
                call.created = Some(ino);
            }
        }
    }

    pub(crate) fn seen_rename(
        &mut self,
        from: &Path,
        to: &Path,
        result: &Result<(u64, Option<u64>), Errno>,
    ) {
        let Ok((moved, replaced)) = *result else {
            return;
        };
        let actor = self.actor();
        if self.is_lock(from) && !self.is_lock(to) {
            let in_dir = to.parent() == Some(self.lock_dir.as_path());
            let (check, kind) = match self.current_call() {
                Some(call) => {
                    if in_dir {
                        call.trash.push(to.to_path_buf());
                    }
                    (call.check, Some(call.kind))
                }
                None => (None, None),
            };
            self.evict(moved, actor, kind, check, false);
        }
        if self.is_lock(to) {
            for e in &mut self.obs.evictions {
                if e.victim == moved && e.outcome == Outcome::Pending {
                    e.outcome = Outcome::Restored;
                }
            }
            if let Some(old) = replaced {
                let kind = self.current_call().map(|c| c.kind);
                self.evict(old, actor, kind, None, true);
            }
        }
    }

    /// An exchange of two names: the protocol swaps break markers only,
    /// never the lock path.
    pub(crate) fn seen_exchange(&mut self, a: &Path, b: &Path, result: &Result<(u64, u64), Errno>) {
        if result.is_ok() && (self.is_lock(a) || self.is_lock(b)) {
            let (step, now) = (self.step, self.now);
            let text = format!(
                "{:?} exchanged the lock path with another name",
                self.actor()
            );
            self.obs
                .find(Invariant::UnreadBreak, step, now, text, Vec::new());
        }
    }

    pub(crate) fn seen_link(
        &mut self,
        source: Option<u64>,
        to: &Path,
        result: &Result<u64, Errno>,
    ) {
        if !self.is_lock(to) {
            return;
        }
        let Some(source) = source else {
            return;
        };
        for e in &mut self.obs.evictions {
            if e.victim == source && e.outcome == Outcome::Pending {
                match result {
                    Ok(_) => e.outcome = Outcome::Restored,
                    Err(errno) => e.restore_failed = Some(*errno),
                }
            }
        }
    }

    pub(crate) fn seen_unlink(&mut self, path: &Path, result: &Result<u64, Errno>) {
        let Ok(ino) = *result else {
            return;
        };
        if self.is_lock(path) {
            let actor = self.actor();
            let kind = self.current_call().map(|c| c.kind);
            self.evict(ino, actor, kind, None, true);
            return;
        }
        let gone = self.tree.inode(ino).is_none_or(|i| i.nlink == 0);
        if gone {
            for e in &mut self.obs.evictions {
                if e.victim == ino && e.outcome == Outcome::Pending {
                    e.outcome = Outcome::Removed;
                }
            }
        }
    }

    /// A lock inode was moved off the lock path by `actor` (or, with
    /// `replaced`, lost its name there for good).
    fn evict(
        &mut self,
        ino: u64,
        actor: Actor,
        kind: Option<CallKind>,
        check: Option<Option<u64>>,
        replaced: bool,
    ) {
        let Actor::Contender(mover) = actor else {
            return;
        };
        let made_by = self.tree.inode(ino).map(|i| i.creator);
        match made_by {
            Some(Actor::Contender(owner)) if owner != mover => {}
            _ => return,
        }
        let (step, now) = (self.step, self.now);
        let unread = !self.can_read(ino, actor);
        self.obs.evictions.push(Eviction {
            victim: ino,
            unread,
            replaced,
            mover: actor,
            kind,
            step,
            at: now,
            check,
            restore_failed: None,
            created_meanwhile: false,
            outcome: if replaced {
                Outcome::Removed
            } else {
                Outcome::Pending
            },
        });
    }

    /// A backend call returned: the trash it made must be gone if it
    /// returned `Ok`.
    pub(crate) fn check_call_trash(&mut self, call: &Call, ok: bool) {
        if !ok {
            return;
        }
        let left: Vec<PathBuf> = call
            .trash
            .iter()
            .filter(|p| self.tree.lookup(p).is_ok())
            .cloned()
            .collect();
        for path in left {
            let shown = self.trace_path(&path);
            let text = format!(
                "c{} {:?} returned Ok but left trash {shown}",
                call.contender, call.kind
            );
            let (step, now) = (self.step, self.now);
            self.obs
                .find(Invariant::LeftBehind, step, now, text, Vec::new());
        }
    }

    /// `try_create` returned `Created`: a new holder.
    pub(crate) fn new_hold(
        &mut self,
        contender: usize,
        owner: &str,
        call: &Call,
    ) -> Option<String> {
        let ino = call.created?;
        let n = self.obs.acquisitions.get(contender).copied().unwrap_or(0) + 1;
        if let Some(slot) = self.obs.acquisitions.get_mut(contender) {
            *slot = n;
        }
        let label = format!("c{contender}.{n}");
        self.obs.holds.insert(
            ino,
            Hold {
                contender,
                label: label.clone(),
                call_started: call.started,
                ended_at: None,
                lost_reported: false,
                stamps: vec![call.started],
                errors: Vec::new(),
            },
        );
        self.obs.owners.insert(owner.to_owned(), ino);
        self.trace.owner(owner, label.clone());
        let now = self.now;
        self.obs.taken_over.push(now);
        Some(label)
    }

    /// A refresh by `owner` returned `refreshed` (invariant 5).
    pub(crate) fn check_refresh(&mut self, owner: &str, call: &Call, refreshed: bool) {
        let Some(ino) = self.obs.hold_of(owner) else {
            return;
        };
        if refreshed && let Some(hold) = self.obs.holds.get_mut(&ino) {
            hold.stamps.push(call.started);
        }
        if !refreshed {
            if let Some(hold) = self.obs.holds.get_mut(&ino) {
                hold.lost_reported = true;
            }
            return;
        }
        // A check is a snapshot: judge it at its linearization point, the
        // call's last look at the path. If the path named our inode then,
        // a change since (an intruder, a peer) is a loss the next check
        // reports, not a lie.
        let at_path = self.tree.lookup(&self.lock_path).ok();
        if at_path == Some(ino) || call.check == Some(Some(ino)) {
            return;
        }
        let now = self.now;
        let label = self.obs.label_of(ino).unwrap_or("?").to_owned();
        let there = match at_path {
            None => "nothing".to_owned(),
            Some(other) => self.describe(other),
        };
        let seen = match call.check {
            None => "never looked at the path".to_owned(),
            Some(None) => "last saw nothing at the path".to_owned(),
            Some(Some(other)) => format!("last saw {} at the path", self.describe(other)),
        };
        let text = format!(
            "refresh by {label} returned Ok(true) although it {seen}; the path names {there}, not its ino {ino}"
        );
        let step = self.step;
        self.obs
            .find(Invariant::RefreshTruth, step, now, text, vec![ino]);
    }

    /// A refresh by `owner` failed with an error.
    pub(crate) fn refresh_failed(&mut self, owner: &str) {
        let now = self.now;
        if let Some(ino) = self.obs.hold_of(owner)
            && let Some(hold) = self.obs.holds.get_mut(&ino)
        {
            hold.errors.push(now);
        }
    }

    /// `release` began: the holder is no longer live.
    pub(crate) fn end_hold(&mut self, owner: &str) {
        let now = self.now;
        if let Some(ino) = self.obs.hold_of(owner)
            && let Some(hold) = self.obs.holds.get_mut(&ino)
        {
            hold.ended_at.get_or_insert(now);
        }
    }

    /// A contender entered its critical section holding `held`.
    pub(crate) fn enter_cs(&mut self, contender: usize, held: Arc<HeldLock>) {
        let Some(ino) = self.obs.hold_of(held.owner().as_str()) else {
            return;
        };
        if let Some(slot) = self.obs.cs.get_mut(contender) {
            *slot = Some(Cs { ino, held });
        }
    }

    /// A contender crashed at `now`: a liveness obligation if its lock (or
    /// half-made lock) is at the path.
    pub(crate) fn crash_obligation(&mut self, contender: usize) {
        let at_path = self.tree.lookup(&self.lock_path).ok();
        let made_by_it = at_path.filter(|&ino| {
            self.tree
                .inode(ino)
                .is_some_and(|i| i.creator == Actor::Contender(contender))
        });
        if let Some(ino) = made_by_it {
            let now = self.now;
            self.obs.obligations.push(Obligation {
                crashed: contender,
                ino,
                at: now,
                deadline: now.saturating_add(self.obs.limits.liveness),
                done: false,
            });
        }
    }

    /// The checks after every step.
    pub(crate) fn check_step(&mut self) {
        let (step, now) = (self.step, self.now);
        // 1: mutual exclusion among holders that have not seen a loss.
        let inside: Vec<(usize, u64)> = self
            .obs
            .cs
            .iter()
            .enumerate()
            .filter_map(|(c, cs)| {
                cs.as_ref()
                    .filter(|cs| !cs.held.is_lost())
                    .map(|cs| (c, cs.ino))
            })
            .collect();
        for (i, &(_, a)) in inside.iter().enumerate() {
            for &(_, b) in &inside[i + 1..] {
                let pair = (a.min(b), a.max(b));
                if !self.obs.pairs_seen.insert(pair) {
                    continue;
                }
                let excused =
                    self.obs.excused(&self.procs, a, now) || self.obs.excused(&self.procs, b, now);
                let (la, lb) = (
                    self.obs.label_of(a).unwrap_or("?").to_owned(),
                    self.obs.label_of(b).unwrap_or("?").to_owned(),
                );
                let there = match self.tree.lookup(&self.lock_path).ok() {
                    None => "nothing".to_owned(),
                    Some(ino) => self.describe(ino),
                };
                self.obs.findings.push(Finding {
                    invariant: Invariant::MutualExclusion,
                    step,
                    at: now,
                    text: format!(
                        "{la} (ino {a}) and {lb} (ino {b}) are both in their critical sections, neither has seen a loss; the lock path names {there}"
                    ),
                    inos: vec![a, b],
                    excused,
                });
            }
        }
        // A reported loss must have fired `lost()`.
        let unfired: Vec<u64> = self
            .obs
            .cs
            .iter()
            .flatten()
            .filter(|cs| !cs.held.is_lost())
            .filter(|cs| self.obs.holds.get(&cs.ino).is_some_and(|h| h.lost_reported))
            .map(|cs| cs.ino)
            .collect();
        for ino in unfired {
            if self.obs.lost_seen.insert(ino) {
                let label = self.obs.label_of(ino).unwrap_or("?").to_owned();
                let text = format!(
                    "a refresh by {label} reported the lock lost, but lost() has not fired"
                );
                self.obs
                    .find(Invariant::LostSignal, step, now, text, vec![ino]);
            }
        }
        self.check_liveness(false);
    }

    /// 4: obligations whose deadline passed (or, at the end, all of them).
    pub(crate) fn check_liveness(&mut self, at_end: bool) {
        let now = self.now;
        let max_wait = self.obs.limits.max_wait;
        let mut due = Vec::new();
        for (i, ob) in self.obs.obligations.iter().enumerate() {
            if !ob.done && (now >= ob.deadline || at_end) {
                due.push(i);
            }
        }
        for i in due {
            let Some(ob) = self.obs.obligations.get_mut(i) else {
                continue;
            };
            ob.done = true;
            let (crashed, ino, at, deadline) = (ob.crashed, ob.ino, ob.at, ob.deadline);
            if now < deadline && at_end {
                continue;
            }
            let quiet = !self
                .obs
                .fault_times
                .iter()
                .any(|&t| t > at && t <= deadline);
            // Only a waiter that can read the lock may break it (private
            // files on other hosts are honoured, never broken).
            let waiter = (0..self.procs.len()).find(|&w| {
                w != crashed
                    && self.can_read(ino, Actor::Contender(w))
                    && !self.procs[w].crashed
                    && !Observer::paused_between(&self.procs, w, at, deadline)
                    && self.obs.acquiring[w]
                        .is_some_and(|since| since <= at && since + max_wait >= deadline)
            });
            if quiet && waiter.is_some() {
                self.obs.bump("liveness.checked");
            }
            let met = self.obs.taken_over.iter().any(|&t| t > at && t <= deadline);
            if met {
                continue;
            }
            if let (true, Some(w)) = (quiet, waiter) {
                let text = format!(
                    "c{crashed} crashed holding the lock at {:.3}s; c{w} has waited since then and nobody holds the lock at {:.3}s",
                    at.as_secs_f64(),
                    deadline.as_secs_f64()
                );
                let step = self.step;
                self.obs
                    .find(Invariant::Liveness, step, deadline, text, Vec::new());
            }
        }
    }

    /// 3 at the end: nothing left in the lock's directory (when every
    /// contender finished and no fault could excuse a leftover).
    pub(crate) fn check_end(&mut self, all_finished: bool) {
        self.check_liveness(true);
        if !all_finished || self.obs.io_faults > 0 || self.obs.intruded {
            return;
        }
        let dir = self.lock_dir.clone();
        let left: Vec<(std::ffi::OsString, u64)> = self.tree.list(&dir);
        for (name, ino) in left {
            let what = self.describe(ino);
            let text = format!(
                "every contender finished, but {} ({what}) is still there",
                name.to_string_lossy()
            );
            let (step, now) = (self.step, self.now);
            self.obs
                .find(Invariant::LeftBehind, step, now, text, Vec::new());
        }
    }

    /// Adds a finding for the run loop (stuck, step limit).
    pub(crate) fn find_stuck(&mut self, text: String) {
        let (step, now) = (self.step, self.now);
        self.obs.find(Invariant::Stuck, step, now, text, Vec::new());
    }
}
