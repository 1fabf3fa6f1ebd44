//! What the checker sees of the file system: every look at the lock path,
//! and who moves whose lock file off it (invariants 2, 3 and 6).

use std::path::{Path, PathBuf};

use super::{Call, CallKind, Eviction, Invariant, Outcome};
use crate::fs::{Actor, Errno};
use crate::world::State;

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
}
