//! Keyed FIFO serialization of async tasks inside one process.
//!
//! A [`Serializer`] runs the tasks submitted under one key one at a time, in
//! the order in which [`Serializer::serialize`] (or [`Serializer::lock`]) was
//! *called*, while tasks under different keys run concurrently.
//!
//! # How it works
//!
//! A mutex guards a map from key to queue; the keys are spread over
//! [`SHARDS`] such maps by their hash, each behind its own mutex on its own
//! cache lines, so that calls on different keys seldom meet on one mutex
//! (one key always lives in the same shard). A key is in its map exactly while
//! somebody holds it; the holder is implicit and the queue lists the waiters
//! behind it. Taking a free key inserts it and is ready at once (no allocation
//! besides the map slot); taking a held key appends a waiter slot. Releasing
//! pops the next live waiter, marks it granted and wakes it, or removes the key
//! when nobody waits, so an idle key costs nothing.
//!
//! A waiter that is dropped before it is granted leaves a tombstone that the
//! next hand-off skips, which makes cancellation O(1); tombstones are compacted
//! away once they outnumber the live waiters. A waiter that is dropped after it
//! was granted, but before it was polled, passes the key on at once.
//!
//! Under contention every call queues (the key is never free between two
//! tasks), so the queued path is the hot one: the key is hashed once per call,
//! outside the mutex, and the hash travels with the turn and the guard so that
//! the release looks the key up without hashing again; and a released guard
//! leaves its waiter slot for the next queued call to reuse, so a steady
//! convoy allocates nothing.
//!
//! Keys are hashed with foldhash, seeded at random per serializer, not with
//! the standard library's SipHash: SipHash was the largest single cost of a
//! contended call (about 25 ns of 150 on the benchmark machine). foldhash
//! resists hash flooding only as far as its random seed stays unknown: it
//! is no cryptographic hash, and a program that takes keys from an
//! adversary who can measure its timing should hash them itself first (a
//! key type whose `Hash` writes a keyed digest).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;
use foldhash::fast::RandomState;

/// Runs async tasks one at a time per key, in call order.
///
/// Tasks under the same key never overlap and start in the order in which
/// they were submitted; tasks under different keys run concurrently. A task
/// that fails, panics or is cancelled passes the key on to the next one, and a
/// key whose last task finished is forgotten, so idle keys cost no memory.
///
/// `Serializer` is a cheap handle: clones share the same keys, and the futures
/// it returns own what they need, so they can be spawned.
///
/// # Examples
///
/// ```
/// use heldlock_core::Serializer;
///
/// # futures::executor::block_on(async {
/// let serializer = Serializer::new();
/// let value = serializer.serialize("catalog", async { 42 }).await;
/// assert_eq!(value, 42);
/// assert_eq!(serializer.pending_keys(), 0);
/// # });
/// ```
pub struct Serializer<K> {
    shared: Arc<Shared<K>>,
}

struct Shared<K> {
    /// Hashes keys outside the mutex; the map itself only reuses the result.
    /// foldhash, seeded per serializer (see the module docs).
    hasher: RandomState,
    shards: [Shard<K>; SHARDS],
}

/// How many independent maps the keys are spread over. With one mutex for
/// all keys, a task submitting calls and the workers releasing keys met on
/// it at every call even when they worked on different keys; an idle shard
/// costs its 128 bytes and no allocation.
const SHARDS: usize = 16;

/// One map and its mutex, alone on its cache lines (128 bytes: two lines,
/// which x86's adjacent-line prefetcher pulls in together).
#[repr(align(128))]
struct Shard<K>(Mutex<Keys<K>>);

/// Everything behind one shard's mutex.
struct Keys<K> {
    queues: HashMap<Hashed<K>, Queue, BuildHasherDefault<PassThrough>>,
    /// The waiter slot of the last finished turn, ready for the next queued
    /// call: in a convoy every release is followed by a queued call, so one
    /// slot is enough to stop the allocations, and it is all an idle
    /// serializer keeps.
    spare: Option<Arc<Waiter>>,
}

/// A key with its hash, computed once per call by [`Shared::hashed`].
struct Hashed<K> {
    hash: u64,
    key: K,
}

impl<K: Clone> Hashed<K> {
    /// A copy for the map, which keeps its own while the caller keeps one.
    fn clone_key(&self) -> Self {
        Hashed {
            hash: self.hash,
            key: self.key.clone(),
        }
    }
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
struct PassThrough(u64);

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

/// The waiters behind the current holder of one key.
#[derive(Default)]
struct Queue {
    waiters: VecDeque<Arc<Waiter>>,
    /// How many entries of `waiters` are tombstones of cancelled waiters.
    cancelled: usize,
}

const WAITING: u8 = 0;
const GRANTED: u8 = 1;
const CANCELLED: u8 = 2;

/// One queued call. `state` only changes while the map mutex is held; it is
/// atomic so that a waiting future can check for its grant without the mutex.
struct Waiter {
    state: AtomicU8,
    waker: AtomicWaker,
}

impl Waiter {
    fn new() -> Self {
        Waiter {
            state: AtomicU8::new(WAITING),
            waker: AtomicWaker::new(),
        }
    }

    fn is_granted(&self) -> bool {
        self.state.load(Ordering::Acquire) == GRANTED
    }
}

impl<K> Shared<K> {
    /// The map of the shard of keys hashed to `hash`, even if a panicking
    /// `Eq` of a key poisoned its mutex: every mutation below leaves the map
    /// consistent before it can panic.
    fn keys(&self, hash: u64) -> MutexGuard<'_, Keys<K>> {
        // Bits that the map itself uses little: it takes the bucket from the
        // low bits and its tags from the top seven.
        #[allow(clippy::cast_possible_truncation)] // masked to below SHARDS
        let shard = (hash >> 32) as usize % SHARDS;
        Self::lock_shard(&self.shards[shard])
    }

    fn lock_shard(shard: &Shard<K>) -> MutexGuard<'_, Keys<K>> {
        shard.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many keys are held or waited for, over all shards.
    fn pending_keys(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| Self::lock_shard(shard).queues.len())
            .sum()
    }
}

impl<K: Eq + Hash> Shared<K> {
    /// Hashes `key` once, before the mutex is taken.
    fn hashed(&self, key: K) -> Hashed<K> {
        Hashed {
            hash: self.hasher.hash_one(&key),
            key,
        }
    }

    /// Passes `key` from its holder to the next live waiter, or forgets the key
    /// when nobody waits. Returns the waiter to wake once the mutex is released.
    fn hand_off(keys: &mut Keys<K>, key: &Hashed<K>) -> Option<Arc<Waiter>> {
        let queue = keys.queues.get_mut(key)?;
        while let Some(next) = queue.waiters.pop_front() {
            if next.state.load(Ordering::Relaxed) == CANCELLED {
                queue.cancelled -= 1;
                continue;
            }
            next.state.store(GRANTED, Ordering::Release);
            return Some(next);
        }
        keys.queues.remove(key);
        None
    }

    /// Releases `key` on behalf of a guard, keeping the guard's waiter slot
    /// for reuse when nobody else still refers to it.
    fn release(&self, key: &Hashed<K>, slot: Option<Arc<Waiter>>) {
        // Made ready for reuse before the mutex, which then only stores it.
        // Unique once the previous holder, which woke this slot, dropped its
        // reference; if it has not yet, the slot is simply freed. A waker
        // left in it is dropped here too, outside the mutex: dropping a
        // waker may free a task, whose drop must be free to use this map.
        let mut reusable = slot.and_then(|mut slot| {
            *Arc::get_mut(&mut slot)? = Waiter::new();
            Some(slot)
        });
        let mut keys = self.keys(key.hash);
        let next = Self::hand_off(&mut keys, key);
        if keys.spare.is_none() {
            keys.spare = reusable.take();
        }
        drop(keys);
        drop(reusable);
        if let Some(next) = next {
            next.waker.wake();
        }
    }
}

impl<K: Eq + Hash + Clone> Serializer<K> {
    /// Creates a serializer with no keys.
    ///
    /// # Examples
    ///
    /// ```
    /// let serializer = heldlock_core::Serializer::<u64>::new();
    /// assert_eq!(serializer.pending_keys(), 0);
    /// ```
    pub fn new() -> Self {
        Serializer {
            shared: Arc::new(Shared {
                hasher: RandomState::default(),
                shards: std::array::from_fn(|_| {
                    Shard(Mutex::new(Keys {
                        queues: HashMap::default(),
                        spare: None,
                    }))
                }),
            }),
        }
    }

    /// Runs `task` once every task submitted earlier under `key` has finished,
    /// and returns its output.
    ///
    /// The place in the queue is taken when `serialize` is called, not when the
    /// returned future is first polled, so calls made in a given order run in
    /// that order however their futures are scheduled. `task` is not polled
    /// before its turn.
    ///
    /// A task that returns an error is just a value to the serializer: the next
    /// task runs. A task that panics unwinds into its own caller, and the next
    /// task runs. Dropping the returned future gives up its place (or its turn)
    /// without blocking anyone.
    ///
    /// # Examples
    ///
    /// ```
    /// use heldlock_core::Serializer;
    ///
    /// # futures::executor::block_on(async {
    /// let serializer = Serializer::new();
    /// let first = serializer.serialize("db", async { "first" });
    /// let second = serializer.serialize("db", async { "second" });
    /// // However they are polled, `first` runs before `second`.
    /// let (a, b) = futures::join!(second, first);
    /// assert_eq!((a, b), ("second", "first"));
    /// # });
    /// ```
    ///
    /// The task must be a future; anything else is refused at compile time:
    ///
    /// ```compile_fail
    /// let serializer = heldlock_core::Serializer::new();
    /// let _ = serializer.serialize("key", 42); // error: `{integer}` is not a future
    /// ```
    pub fn serialize<F>(&self, key: K, task: F) -> impl Future<Output = F::Output> + use<K, F>
    where
        F: Future,
    {
        let turn = self.lock(key);
        // The turn itself holds the key once granted (no guard is made): the
        // future then stores one place instead of a turn and a guard, which
        // matters when many thousands are queued at once.
        async move {
            std::future::poll_fn(|cx| turn.poll_granted(cx)).await;
            let output = task.await;
            drop(turn);
            output
        }
    }

    /// Queues for `key` now and resolves to a guard once it is this call's turn.
    ///
    /// The guard holds the key until it is dropped. Use this form when the
    /// critical section is not a single future, for instance when it spans
    /// several `.await`s of a larger function.
    ///
    /// # Examples
    ///
    /// ```
    /// use heldlock_core::Serializer;
    ///
    /// # futures::executor::block_on(async {
    /// let serializer = Serializer::new();
    /// let guard = serializer.lock("config").await;
    /// assert_eq!(guard.key(), &"config");
    /// assert!(serializer.try_lock("config").is_none());
    /// drop(guard);
    /// assert!(serializer.try_lock("config").is_some());
    /// # });
    /// ```
    pub fn lock(&self, key: K) -> Turn<K> {
        let key = self.shared.hashed(key);
        let mut keys = self.shared.keys(key.hash);
        let Keys { queues, spare } = &mut *keys;
        // Look before inserting: a held key (the common case under
        // contention) then costs no clone of the key.
        let waiter = if let Some(queue) = queues.get_mut(&key) {
            let waiter = spare.take().unwrap_or_else(|| Arc::new(Waiter::new()));
            queue.waiters.push_back(Arc::clone(&waiter));
            Some(waiter)
        } else {
            queues.insert(key.clone_key(), Queue::default());
            None
        };
        drop(keys);
        Turn {
            place: Some(Place {
                shared: Arc::clone(&self.shared),
                key,
                waiter,
            }),
        }
    }

    /// Takes `key` if nobody holds it or waits for it, without queueing.
    ///
    /// # Examples
    ///
    /// ```
    /// let serializer = heldlock_core::Serializer::new();
    /// let guard = serializer.try_lock(7).expect("nobody holds key 7");
    /// assert!(serializer.try_lock(7).is_none());
    /// drop(guard);
    /// ```
    pub fn try_lock(&self, key: K) -> Option<KeyGuard<K>> {
        let key = self.shared.hashed(key);
        let mut keys = self.shared.keys(key.hash);
        if keys.queues.contains_key(&key) {
            return None;
        }
        keys.queues.insert(key.clone_key(), Queue::default());
        drop(keys);
        Some(KeyGuard {
            place: Some(Place {
                shared: Arc::clone(&self.shared),
                key,
                waiter: None,
            }),
        })
    }

    /// How many keys are held or waited for right now.
    ///
    /// A key is forgotten as soon as its last task finishes, so this is zero
    /// whenever the serializer is idle.
    ///
    /// # Examples
    ///
    /// ```
    /// let serializer = heldlock_core::Serializer::new();
    /// let guard = serializer.try_lock("a");
    /// assert_eq!(serializer.pending_keys(), 1);
    /// drop(guard);
    /// assert_eq!(serializer.pending_keys(), 0);
    /// ```
    pub fn pending_keys(&self) -> usize {
        self.shared.pending_keys()
    }
}

impl<K: Eq + Hash + Clone> Default for Serializer<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K> Clone for Serializer<K> {
    fn clone(&self) -> Self {
        Serializer {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K> fmt::Debug for Serializer<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serializer")
            .field("pending_keys", &self.shared.pending_keys())
            .finish()
    }
}

/// A place in a key's queue: a future that resolves to a [`KeyGuard`] when it
/// is this call's turn. Returned by [`Serializer::lock`].
///
/// Dropping a `Turn` gives up the place; if the turn had already come, the key
/// passes to the next waiter at once.
#[must_use = "a Turn holds a place in the queue; await it or drop it"]
pub struct Turn<K: Eq + Hash> {
    /// `None` once the turn has resolved into a guard.
    place: Option<Place<K>>,
}

/// What a turn owns, and hands on whole to its guard.
struct Place<K> {
    shared: Arc<Shared<K>>,
    key: Hashed<K>,
    /// `None` when the key was free at call time (granted at once).
    waiter: Option<Arc<Waiter>>,
}

impl<K> Place<K> {
    fn is_granted(&self) -> bool {
        self.waiter.as_ref().is_none_or(|w| w.is_granted())
    }
}

// A `Turn` never pins its key in place (it only moves it into the guard), so
// it is `Unpin` whatever the key is.
impl<K: Eq + Hash> Unpin for Turn<K> {}

impl<K: Eq + Hash> Turn<K> {
    /// Ready once it is this turn's call; the turn then holds the key until
    /// it is dropped, as its guard would.
    fn poll_granted(&self, cx: &Context<'_>) -> Poll<()> {
        let Some(place) = &self.place else {
            panic!("`Turn` polled after it completed");
        };
        if let Some(waiter) = &place.waiter
            && !waiter.is_granted()
        {
            waiter.waker.register(cx.waker());
            if !waiter.is_granted() {
                return Poll::Pending;
            }
        }
        Poll::Ready(())
    }
}

impl<K: Eq + Hash> Future for Turn<K> {
    type Output = KeyGuard<K>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<KeyGuard<K>> {
        std::task::ready!(self.poll_granted(cx));
        Poll::Ready(KeyGuard {
            place: self.place.take(),
        })
    }
}

impl<K: Eq + Hash> Drop for Turn<K> {
    fn drop(&mut self) {
        let Some(place) = self.place.take() else {
            return; // resolved: the guard owns the place now
        };
        // A grant is final (only this turn could cancel its waiter), so one
        // seen here needs no mutex to confirm: release the key as a guard
        // would, keeping the waiter slot for reuse.
        if place.is_granted() {
            place.shared.release(&place.key, place.waiter);
            return;
        }
        let mut keys = place.shared.keys(place.key.hash);
        // The grant is only ever given under the mutex, so this is definitive.
        let next = if place.is_granted() {
            Shared::hand_off(&mut keys, &place.key)
        } else {
            if let (Some(waiter), Some(queue)) = (&place.waiter, keys.queues.get_mut(&place.key)) {
                waiter.state.store(CANCELLED, Ordering::Relaxed);
                queue.cancelled += 1;
                if queue.cancelled * 2 > queue.waiters.len() {
                    queue
                        .waiters
                        .retain(|w| w.state.load(Ordering::Relaxed) != CANCELLED);
                    queue.cancelled = 0;
                }
            }
            None
        };
        drop(keys);
        // The tombstone may outlive this turn in the queue, and be dropped
        // under the mutex; it must not carry our waker there, since dropping
        // a waker may free a task whose drop uses this serializer.
        if let Some(waiter) = &place.waiter {
            drop(waiter.waker.take());
        }
        if let Some(next) = next {
            next.waker.wake();
        }
    }
}

impl<K: Eq + Hash + fmt::Debug> fmt::Debug for Turn<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Turn")
            .field("key", &self.place.as_ref().map(|p| &p.key.key))
            .field(
                "granted",
                &self.place.as_ref().is_none_or(Place::is_granted),
            )
            .finish()
    }
}

/// Holds one key of a [`Serializer`]; dropping it passes the key on.
///
/// Returned by [`Serializer::lock`] and [`Serializer::try_lock`].
#[must_use = "the key is released as soon as the guard is dropped"]
#[clippy::has_significant_drop]
pub struct KeyGuard<K: Eq + Hash> {
    /// Always `Some` until `drop`.
    place: Option<Place<K>>,
}

impl<K: Eq + Hash> KeyGuard<K> {
    /// The key this guard holds.
    pub fn key(&self) -> &K {
        match &self.place {
            Some(place) => &place.key.key,
            None => unreachable!("a live KeyGuard always holds its key"),
        }
    }
}

impl<K: Eq + Hash> Drop for KeyGuard<K> {
    fn drop(&mut self) {
        if let Some(place) = self.place.take() {
            place.shared.release(&place.key, place.waiter);
        }
    }
}

impl<K: Eq + Hash + fmt::Debug> fmt::Debug for KeyGuard<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyGuard")
            .field("key", &self.place.as_ref().map(|p| &p.key.key))
            .finish()
    }
}

static DEFAULT: LazyLock<Serializer<String>> = LazyLock::new(Serializer::new);

/// The process-wide serializer behind [`serialize`].
///
/// # Examples
///
/// ```
/// let idle = heldlock_core::default_serializer().pending_keys();
/// # let _ = idle;
/// ```
pub fn default_serializer() -> &'static Serializer<String> {
    &DEFAULT
}

/// Runs `task` after every task submitted earlier under `key` anywhere in this
/// process, through one process-wide [`Serializer`].
///
/// Prefer your own [`Serializer`] when the keys belong to one component (tests
/// then start from a clean state); use this when unrelated parts of a program
/// must agree on one queue per key, for example per file path.
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// let n = heldlock_core::serialize("/var/lib/app/state.json", async { 1 + 1 }).await;
/// assert_eq!(n, 2);
/// # });
/// ```
pub fn serialize<F>(key: impl Into<String>, task: F) -> impl Future<Output = F::Output>
where
    F: Future,
{
    DEFAULT.serialize(key.into(), task)
}
