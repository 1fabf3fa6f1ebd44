//! The checks on holders and liveness: new holds, refreshes, critical
//! sections, crash obligations, and the checks after every step and at
//! the end (invariants 1, 3, 4 and 5, and the lost signal).

use std::sync::Arc;
use std::time::Duration;

use heldlock_core::HeldLock;

use super::{Call, Cs, Finding, Hold, Invariant, Obligation, Observer};
use crate::fs::Actor;
use crate::world::State;

impl State {
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

    /// `acquire`, called at `since`, returned now: within `max_wait` plus
    /// one `poll` (the limit every step past the deadline shares), unless
    /// its contender was paused in between.
    pub(crate) fn check_wait_bound(&mut self, contender: usize, since: Duration) {
        let now = self.now;
        let bound = self.obs.limits.max_wait + self.obs.limits.poll;
        if now.saturating_sub(since) <= bound
            || Observer::paused_between(&self.procs, contender, since, now)
        {
            return;
        }
        let text = format!(
            "c{contender}'s acquire() called at {:.3}s returned at {:.3}s, past max_wait + poll ({:.3}s)",
            since.as_secs_f64(),
            now.as_secs_f64(),
            bound.as_secs_f64()
        );
        let step = self.step;
        self.obs
            .find(Invariant::WaitBound, step, now, text, Vec::new());
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
