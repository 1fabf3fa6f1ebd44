//! How each finding counts: real, excused, a known race or a known late
//! loss (see the [module docs](super)).

use super::{Class, Eviction, Invariant, Observer, Outcome, Violation};
use crate::fs::Actor;
use crate::world::Proc;

impl Observer {
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
