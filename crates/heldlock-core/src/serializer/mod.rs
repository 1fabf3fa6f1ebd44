//! Keyed FIFO serialization of async tasks inside one process.
//!
//! A [`Serializer`] runs the tasks submitted under one key one at a time, in
//! the order in which [`Serializer::serialize`] (or [`Serializer::lock`]) was
//! *called*, while tasks under different keys run concurrently.
//!
//! # How it works
//!
//! Tickets, per key, as at a bakery counter. A call takes the next ticket
//! of its key and returns at once; the key shows the ticket being served,
//! and the call holding that ticket holds the key. Releasing the key (the
//! task finished, failed, panicked or was dropped) serves the next ticket.
//! The transition table, and the argument that no wake-up is lost, are in
//! the `ticket` module; in short:
//!
//! * a call on a busy key is one increment under its shard's mutex: nothing
//!   is allocated and no waiter is registered. A turn that finds its ticket
//!   served when it is first polled runs at once, having read one atomic.
//!   That is every turn when calls are made in a batch and then polled in
//!   call order (as `join_all` does), so 100,000 such calls cost 100,000
//!   increments and no more memory than their futures;
//! * only a turn that is polled before its ticket comes leaves its waker, in
//!   a slot of the key's ring, indexed by ticket (the ring grows to reach
//!   it, with empty slots for the tickets in front); the release that
//!   serves the ticket wakes it. The ring belongs to the key and is reused;
//! * a turn dropped before its ticket comes marks its slot cancelled, and
//!   the release that reaches it skips it, so a cancelled call blocks
//!   nobody (cancelled tickets at the tail are given back instead); a turn
//!   dropped after its ticket came, polled or not, releases the key as its
//!   guard would. A task is dropped before its turn, so its destructors run
//!   while it still holds the key;
//! * the release takes no mutex when no slot exists and a ticket is
//!   outstanding behind it: one compare-and-swap serves the next ticket.
//!   Otherwise it takes the mutex, skips cancelled tickets, wakes the next
//!   holder if it waits, or removes the key when no ticket is left;
//! * so a key is in its map exactly while one of its tickets is
//!   outstanding, and an idle key costs nothing.
//!
//! A busy key's entry (its key, `serving`, `next`) is one allocation, made
//! by the call that finds the key idle and shared by the map and the key's
//! turns and guards; a turn is a reference to the entry and its ticket (16
//! bytes), and `serialize`'s future adds the task and a few bytes. The keys
//! are spread over 16 maps (shards) by their hash, each behind its own mutex
//! on its own cache lines, so that calls on different keys seldom meet on
//! one mutex.
//! Each call hashes its key once, outside the mutex; afterwards its turn
//! finds the key's entry by reference (pointer equality), so no `Eq` of the
//! key runs and nothing is hashed again. Wakers are cloned, woken and
//! dropped outside the mutex, since an executor's waker may run code that
//! uses this serializer. No `unsafe` code is involved.
//!
//! Keys are hashed with foldhash, seeded at random per serializer, not with
//! the standard library's SipHash: SipHash was the largest single cost of a
//! contended call (about 25 ns of 150 on the benchmark machine). foldhash
//! resists hash flooding only as far as its random seed stays unknown: it
//! is no cryptographic hash, and a program that takes keys from an
//! adversary who can measure its timing should hash them itself first (a
//! key type whose `Hash` writes a keyed digest).

mod keys;
mod ticket;
mod turn;

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, LazyLock};

use keys::Shared;
use ticket::KeyRef;
pub use turn::{KeyGuard, Turn};

/// Runs async tasks one at a time per key, in call order.
///
/// Tasks under the same key never overlap and start in the order in which
/// they were submitted; tasks under different keys run concurrently. A task
/// that fails, panics or is cancelled passes the key on to the next one, and a
/// key whose last task finished is forgotten, so idle keys cost no memory.
///
/// `Serializer` is a cheap handle: clones share the same keys, and the futures
/// it returns own what they need, so they can be spawned. They are `Send` when
/// the key is `Send` and `Sync`: the calls on one key share one copy of it.
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
            shared: Arc::new(Shared::new()),
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
        turn::Serialized::new(self.lock(key), task)
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
        let (key, ticket, spare) = KeyRef::take(&self.shared, key);
        let turn = Turn::new(key, ticket);
        // Dropped after the turn exists: should the key's `Drop` panic, the
        // unwinding drops the turn too, and the ticket is settled.
        drop(spare);
        turn
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
        KeyRef::try_take(&self.shared, key).map(KeyGuard::new)
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
