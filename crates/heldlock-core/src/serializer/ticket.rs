//! One busy key: the tickets handed out on it, the ticket being served, and
//! the slots of the calls that wait.
//!
//! Every call takes a ticket, numbered per key in call order; the call whose
//! ticket is being served holds the key. `slots[i]` is about ticket
//! `serving + 1 + i`; a ticket beyond the slots is a call that has neither
//! waited nor been dropped. `slotted` (a bit beside `serving`) is set whenever
//! a slot exists, and cleared only by a release that leaves none: it tells
//! the holder that its release must look at the slots.
//!
//! | event | when | what changes | then, outside the mutex |
//! | --- | --- | --- | --- |
//! | call (`lock`, `serialize`) | key absent | key inserted, `serving = 0`, `next = 1`; the call has ticket 0, served at once | |
//! | call | key present | the call has ticket `next`; `next += 1` | |
//! | `try_lock` | key absent / present | as a call / nothing (refused) | |
//! | poll of turn `t` | `serving == t` | nothing: the turn holds the key | |
//! | poll of turn `t` | `serving != t` | `slotted` set; slot `t` = waiting (with the poll's waker) | the slot's old waker dropped |
//! | drop of turn `t` | `serving == t` | release (below) | |
//! | drop of turn `t` | `t == next - 1` | `slotted` set; `next = t`; then, while the last slot is ticket `next - 1` and cancelled, it goes and `next -= 1` | its waker dropped |
//! | drop of turn `t` | otherwise | `slotted` set; slot `t` = cancelled | its waker dropped |
//! | release | `slotted` clear, `serving + 1 != next` | `serving += 1` (one compare-and-swap, no mutex) | |
//! | release | otherwise (under the mutex) | `serving += 1`, again while the new ticket's slot is cancelled; if `serving == next`, the key is removed; `slotted` = whether slots remain | the new holder's waker, if it left one, woken |
//!
//! Every change happens under the shard's mutex but two: a turn reads
//! `serving` to learn whether its ticket has come, and the holder's release
//! moves `serving` on by a compare-and-swap when no ticket behind it has a
//! slot and one is outstanding. That swap expects `slotted` clear, and every
//! other writer sets `slotted` (under the mutex) before it touches a slot or
//! gives a ticket back, so the swap fails, and the release takes the mutex,
//! exactly when there is something for it to look at.
//!
//! The rules these enforce: a ticket is served only after every earlier
//! ticket of its key was served or cancelled (call order); a cancelled
//! ticket is skipped by the release that reaches it, so it blocks nobody;
//! a served ticket is released by its turn or guard, whether it was polled
//! or not, so a granted call that is dropped passes the key on; and the key
//! leaves its map as soon as no ticket is outstanding, so an idle key costs
//! nothing.
//!
//! The race they prevent: a lost wake-up between a turn that finds its
//! ticket not yet served and the release that serves it. The turn sets
//! `slotted` and looks again before it leaves its waker; the release either
//! swapped `serving` before (the turn sees its ticket served) or finds
//! `slotted` set and pops the slot under the same mutex.
//!
//! A call on a busy key allocates nothing: it costs one increment, and a
//! slot (24 bytes in a per-key ring that is reused) only once its turn was
//! polled and had to wait, or was dropped unserved. The call that finds its
//! key idle allocates the key's entry.

// A `KeyRef` hashes as its entry's precomputed hash and compares by
// address; the atomics and the mutex behind it never take part, so the map's
// keys cannot change while in the map.
#![allow(clippy::mutable_key_type)]

use std::borrow::Borrow;
use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::mem;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Poll, Waker};

use super::keys::{Hashed, Keys, Shared};

/// The low bit of `Entry::serving`: some ticket behind the holder has a slot.
const SLOTTED: usize = 1;

/// Tickets count modulo 2^(`usize::BITS` - 1), so that one fits in
/// `serving` beside [`SLOTTED`]; only differences of outstanding tickets
/// matter, and far fewer than that many can be outstanding.
const TICKETS: usize = usize::MAX >> 1;

/// The ticket after `ticket`.
fn after(ticket: usize) -> usize {
    ticket.wrapping_add(1) & TICKETS
}

/// Where the slot of `ticket` is while `serving` is served.
fn index(serving: usize, ticket: usize) -> usize {
    ticket.wrapping_sub(serving).wrapping_sub(1) & TICKETS
}

/// A busy key, shared by its map and by every turn and guard holding one of
/// its tickets.
pub(super) struct Entry<K> {
    /// The serializer, whose shard of this key guards the slots and `next`.
    /// The map holds this entry and the entry holds the map: the cycle is
    /// broken when the last ticket is released and the key leaves its map.
    shared: Arc<Shared<K>>,
    key: Hashed<K>,
    /// The ticket being served, shifted left by one, with [`SLOTTED`]. Its
    /// ticket changes only by the holder's release (a store under the
    /// mutex, or a compare-and-swap without it, both `Release`); `SLOTTED`
    /// is set under the mutex. Turns read it with `Acquire`, so a served
    /// turn sees everything its predecessor did.
    serving: AtomicUsize,
    /// The ticket the next call gets. Written only under the mutex; read
    /// without it by the holder's release, which only needs to know that a
    /// ticket after its own is outstanding: a stale value either misses a
    /// new ticket (the release then takes the mutex) or predates a ticket
    /// given back (which set `SLOTTED` first, so the release's swap fails).
    next: AtomicUsize,
}

/// A reference to a busy key's [`Entry`], which is also its key in the map.
///
/// Hashed by the key's hash; equal only to itself (pointer equality). Calls
/// look an entry up by key, through `Borrow<Hashed<K>>`; turns and guards
/// look theirs up by this reference, so no `Eq` of the key runs after a
/// call has its ticket. The two agree for every entry a map can hold (the
/// map never holds two entries with equal keys), as `Borrow` requires.
pub(super) struct KeyRef<K>(Arc<Entry<K>>);

impl<K> Hash for KeyRef<K> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.key.hash(state);
    }
}

impl<K> PartialEq for KeyRef<K> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl<K> Eq for KeyRef<K> {}

impl<K> Borrow<Hashed<K>> for KeyRef<K> {
    fn borrow(&self) -> &Hashed<K> {
        &self.0.key
    }
}

/// The slots of the tickets behind the one being served; the map's value.
#[derive(Default)]
pub(super) struct Waiters {
    /// `slots[i]` is about ticket `serving + 1 + i`. Ends at the last
    /// ticket that waited or was cancelled, so its length is at most
    /// `next - serving - 1`.
    slots: VecDeque<Slot>,
}

/// What is known about one ticket behind the holder.
enum Slot {
    /// Its turn has not waited yet: served, it runs when it is polled.
    Unpolled,
    /// Its turn was polled before its ticket came: woken when it comes.
    Waiting(Waker),
    /// Its turn was dropped: skipped when its ticket comes.
    Cancelled,
}

impl Waiters {
    /// The slot of `ticket`, made if the ring does not reach it yet.
    fn slot(&mut self, serving: usize, ticket: usize) -> &mut Slot {
        let index = index(serving, ticket);
        if index >= self.slots.len() {
            self.slots.resize_with(index + 1, || Slot::Unpolled);
        }
        &mut self.slots[index]
    }

    /// Gives back the number of `ticket`, the last one handed out, and the
    /// numbers of the cancelled tickets right before it. Returns the
    /// ticket's slot (to be dropped outside the mutex) and the new `next`.
    fn give_back(&mut self, serving: usize, ticket: usize) -> (Option<Slot>, usize) {
        // How many slots the tickets up to `next` (excluded) can have.
        let room = |next: usize| index(serving, next);
        let mut next = ticket;
        let own = if self.slots.len() > room(next) {
            self.slots.pop_back()
        } else {
            None
        };
        while self.slots.len() == room(next) && matches!(self.slots.back(), Some(Slot::Cancelled)) {
            self.slots.pop_back();
            next = next.wrapping_sub(1) & TICKETS;
        }
        (own, next)
    }
}

/// What a release leaves to do once the mutex is released: dropping a waker
/// or the map's reference runs code (an executor's, a key's drop) that must
/// be free to use this serializer.
#[must_use = "wakes the next holder"]
struct Passed<K> {
    wake: Option<Waker>,
    removed: Option<(KeyRef<K>, Waiters)>,
}

impl<K> Passed<K> {
    fn finish(self) {
        drop(self.removed);
        if let Some(waker) = self.wake {
            waker.wake();
        }
    }
}

impl<K: Eq + Hash> KeyRef<K> {
    /// A call: takes the next ticket of `key`, inserting the key if it is
    /// not busy (its ticket is then served at once). The caller's `key`
    /// comes back when the key was busy (the entry has its own copy): the
    /// caller drops it once the ticket is in a [`Turn`](super::Turn), so
    /// that a key whose `Drop` panics cannot leave a ticket nobody settles.
    pub(super) fn take(shared: &Arc<Shared<K>>, key: K) -> (Self, usize, Option<Hashed<K>>) {
        let key = shared.hashed(key);
        let mut keys = shared.keys(key.hash);
        if let Some((found, _)) = keys.get_key_value(&key) {
            let ticket = found.0.next.load(Ordering::Relaxed);
            found.0.next.store(after(ticket), Ordering::Relaxed);
            let found = KeyRef(Arc::clone(&found.0));
            drop(keys);
            return (found, ticket, Some(key));
        }
        (Self::insert(shared, &mut keys, key), 0, None)
    }

    /// `try_lock`: the first ticket of `key`, or `None` if it is busy.
    pub(super) fn try_take(shared: &Arc<Shared<K>>, key: K) -> Option<Self> {
        let key = shared.hashed(key);
        let mut keys = shared.keys(key.hash);
        if keys.contains_key(&key) {
            return None;
        }
        Some(Self::insert(shared, &mut keys, key))
    }

    fn insert(shared: &Arc<Shared<K>>, keys: &mut Keys<K>, key: Hashed<K>) -> Self {
        let entry = Arc::new(Entry {
            shared: Arc::clone(shared),
            key,
            serving: AtomicUsize::new(0),
            next: AtomicUsize::new(1),
        });
        keys.insert(KeyRef(Arc::clone(&entry)), Waiters::default());
        KeyRef(entry)
    }
}

impl<K> KeyRef<K> {
    /// The key itself.
    pub(super) fn key(&self) -> &K {
        &self.0.key.key
    }

    /// Whether `ticket` is being served. A `true` is final: only the
    /// ticket's own turn or guard moves `serving` on from it.
    pub(super) fn is_served(&self, ticket: usize) -> bool {
        self.0.serving.load(Ordering::Acquire) >> 1 == ticket
    }

    /// A poll of the turn of `ticket`, which found it not served: ready if
    /// it has been served since; otherwise leaves `waker` in its slot.
    pub(super) fn wait(&self, ticket: usize, waker: &Waker) -> Poll<()> {
        // Cloned before the mutex: cloning runs the executor's code.
        let waker = waker.clone();
        let mut keys = self.0.shared.keys(self.0.key.hash);
        let Some(serving) = self.mark_slotted(ticket) else {
            drop(keys);
            return Poll::Ready(());
        };
        let slot = self.waiters(&mut keys).slot(serving, ticket);
        let old = mem::replace(slot, Slot::Waiting(waker));
        drop(keys);
        drop(old);
        Poll::Pending
    }

    /// The drop of the turn of `ticket`, which found it not served: if it
    /// has been served since, passes the key on; otherwise cancels it.
    pub(super) fn give_up(&self, ticket: usize) {
        let mut keys = self.0.shared.keys(self.0.key.hash);
        let Some(serving) = self.mark_slotted(ticket) else {
            let passed = self.pass_on(&mut keys);
            drop(keys);
            passed.finish();
            return;
        };
        let next = self.0.next.load(Ordering::Relaxed);
        let waiters = self.waiters(&mut keys);
        let own = if after(ticket) == next {
            let (own, next) = waiters.give_back(serving, ticket);
            self.0.next.store(next, Ordering::Relaxed);
            own
        } else {
            Some(mem::replace(waiters.slot(serving, ticket), Slot::Cancelled))
        };
        drop(keys);
        drop(own);
    }

    /// The holder's release: passes the key to the next live ticket, or
    /// removes the key when none is outstanding.
    pub(super) fn release(&self) {
        // Only the holder changes the ticket in `serving`, so this value
        // can only have gained `SLOTTED` when the swap below runs.
        let word = self.0.serving.load(Ordering::Relaxed);
        if word & SLOTTED == 0 {
            let next_served = after(word >> 1);
            // `Release`: the next holder reads `serving` with `Acquire`, and
            // sees this holder's work. A turn that sets `SLOTTED` after this
            // swap reads it with `Acquire` too, so whatever it then writes
            // to `next` cannot be what the load below saw.
            if next_served != self.0.next.load(Ordering::Relaxed)
                && self
                    .0
                    .serving
                    .compare_exchange(word, next_served << 1, Ordering::Release, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
        }
        let mut keys = self.0.shared.keys(self.0.key.hash);
        let passed = self.pass_on(&mut keys);
        drop(keys);
        passed.finish();
    }

    /// Sets `SLOTTED` on behalf of the unserved `ticket`, under the mutex.
    /// Returns the ticket being served (which, with `SLOTTED` set, only a
    /// release under this mutex can change), or `None` if it is `ticket`.
    fn mark_slotted(&self, ticket: usize) -> Option<usize> {
        let mut word = self.0.serving.load(Ordering::Acquire);
        loop {
            if word >> 1 == ticket {
                return None;
            }
            if word & SLOTTED != 0 {
                return Some(word >> 1);
            }
            // Fails only when the holder's release swapped `serving` on.
            match self.0.serving.compare_exchange_weak(
                word,
                word | SLOTTED,
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(word >> 1),
                Err(now) => word = now,
            }
        }
    }

    /// The holder's release under the mutex: skips cancelled tickets,
    /// serves the next live one or removes the key.
    fn pass_on(&self, keys: &mut Keys<K>) -> Passed<K> {
        let next = self.0.next.load(Ordering::Relaxed);
        let mut serving = self.0.serving.load(Ordering::Relaxed) >> 1;
        let waiters = self.waiters(keys);
        // `Some(waker)`: served a live ticket; `None`: none is left.
        let served = loop {
            serving = after(serving);
            if serving == next {
                break None;
            }
            match waiters.slots.pop_front() {
                Some(Slot::Cancelled) => {}
                Some(Slot::Waiting(waker)) => break Some(Some(waker)),
                Some(Slot::Unpolled) | None => break Some(None),
            }
        };
        let slotted = if waiters.slots.is_empty() { 0 } else { SLOTTED };
        self.0
            .serving
            .store(serving << 1 | slotted, Ordering::Release);
        match served {
            Some(wake) => Passed {
                wake,
                removed: None,
            },
            None => Passed {
                wake: None,
                removed: keys.remove_entry(self),
            },
        }
    }

    /// This key's waiters. A key is in its map while one of its tickets is
    /// outstanding, and only such a ticket's turn or guard calls this.
    fn waiters<'a>(&self, keys: &'a mut Keys<K>) -> &'a mut Waiters {
        match keys.get_mut(self) {
            Some(waiters) => waiters,
            None => unreachable!("a key with an outstanding ticket is in its map"),
        }
    }
}
