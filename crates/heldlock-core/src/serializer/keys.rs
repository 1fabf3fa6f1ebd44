//! Where the keys live: [`SHARDS`] maps, each behind its own mutex, from a
//! key to the waiters of that key.
//!
//! The rule this module enforces: a key is in its map exactly while some
//! ticket of it is outstanding, and one key always lives in the same shard,
//! so everything about one key (its tickets, its waiters, its removal) is
//! decided under one mutex, but for the release that only moves `serving`
//! on (see the `ticket` module). The race it prevents: a call taking a
//! ticket on a key at the moment its last holder removes it (both happen
//! under the shard's mutex, so the call either finds the key and queues
//! behind the holder, or finds it gone and starts a new entry).
//!
//! The map's key is the key's entry itself (a [`KeyRef`], shared with the
//! turns of that key): a call finds it through the [`Hashed`] key it
//! carries, a turn through its own reference (pointer equality, so no `Eq`
//! of the key runs once a call has its ticket). The key is stored once per
//! busy key, never cloned, and hashed once per call.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};

use foldhash::fast::RandomState;

use super::ticket::{KeyRef, Waiters};

/// How many independent maps the keys are spread over. With one mutex for
/// all keys, a task submitting calls and the workers releasing keys met on
/// it at every call even when they worked on different keys; an idle shard
/// costs its 128 bytes and no allocation.
pub(super) const SHARDS: usize = 16;

/// What the handles of one serializer share.
pub(super) struct Shared<K> {
    /// Hashes keys outside the mutex; the maps only reuse the result.
    /// foldhash, seeded per serializer (see the module docs of the parent).
    hasher: RandomState,
    shards: [Shard<K>; SHARDS],
}

/// One map and its mutex, alone on its cache lines (128 bytes: two lines,
/// which x86's adjacent-line prefetcher pulls in together).
#[repr(align(128))]
struct Shard<K>(Mutex<Keys<K>>);

/// Everything behind one shard's mutex: the busy keys and their waiters.
pub(super) type Keys<K> = HashMap<KeyRef<K>, Waiters, BuildHasherDefault<PassThrough>>;

/// A key with its hash, computed once per call by [`Shared::hashed`].
pub(super) struct Hashed<K> {
    pub(super) hash: u64,
    pub(super) key: K,
}

impl<K> Hash for Hashed<K> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl<K: PartialEq> PartialEq for Hashed<K> {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.key == other.key
    }
}

impl<K: Eq> Eq for Hashed<K> {}

/// The map's hasher: hands back the hash that [`Hashed`] already carries.
#[derive(Default)]
pub(super) struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `Hashed` is ever hashed here, and it writes one `u64`; fold
        // anything else in anyway rather than lose it.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }
}

impl<K> Shared<K> {
    pub(super) fn new() -> Self {
        Shared {
            hasher: RandomState::default(),
            shards: std::array::from_fn(|_| Shard(Mutex::new(Keys::default()))),
        }
    }

    /// The map of the shard of keys hashed to `hash`, even if a panicking
    /// `Eq` of a key poisoned its mutex: every transition looks the key up
    /// before it changes anything, so a panic leaves the map consistent.
    pub(super) fn keys(&self, hash: u64) -> MutexGuard<'_, Keys<K>> {
        // Bits that the map itself uses little: it takes the bucket from the
        // low bits and its tags from the top seven.
        #[allow(clippy::cast_possible_truncation)] // masked to below SHARDS
        let shard = (hash >> 32) as usize % SHARDS;
        Self::lock_shard(&self.shards[shard])
    }

    fn lock_shard(shard: &Shard<K>) -> MutexGuard<'_, Keys<K>> {
        shard.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many keys have an outstanding ticket, over all shards.
    pub(super) fn pending_keys(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| Self::lock_shard(shard).len())
            .sum()
    }
}

impl<K: Hash> Shared<K> {
    /// Hashes `key` once, before any mutex is taken.
    pub(super) fn hashed(&self, key: K) -> Hashed<K> {
        Hashed {
            hash: self.hasher.hash_one(&key),
            key,
        }
    }
}
