//! `cargo xtask bench serializer`: the keyed serializer against three
//! baselines, a `HashMap<K, Arc<tokio::sync::Mutex<()>>>` map (with the
//! standard library's hasher, and again with heldlock's, foldhash), the same
//! map of `async_lock::Mutex`es, and the `lockable` crate.
//!
//! Scenarios (each task is trivial, so this measures the serialization itself):
//! * `one_key`: 100,000 tasks submitted at once on one key, driven by `join_all`
//!   on a current-thread tokio runtime;
//! * `thousand_keys`: 100,000 tasks spread round-robin over 1,000 keys;
//! * `eight_producers`: 8 spawned producers on a 2-worker multi-thread runtime,
//!   each awaiting 12,500 tasks on one shared key in turn;
//! * `spawn_one_key` and `spawn_thousand_keys`: 100,000 tasks each
//!   `tokio::spawn`ed, all of them first, then awaited one by one, on a
//!   2-worker multi-thread runtime driven by `block_on`.
//!
//! Before criterion runs, a memory pass runs each scenario once under a
//! counting allocator and prints peak heap bytes and the keys retained after
//! the tasks drain; then each spawn case runs once more in a fresh process
//! (this binary with `HELDLOCK_SERIALIZER_RSS=<impl>/<case>`), which prints
//! its peak resident set (`VmHWM`) and its growth over the resident set
//! before the case. After criterion, `serializer/goals.rs` times heldlock
//! and both mutex maps in alternating rounds and prints issue 16's verdicts.
#![allow(missing_docs, clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use criterion::{BenchmarkId, Criterion, Throughput};
use futures::future::join_all;
use heldlock_core::Serializer;
use lockable::{AsyncLimit, LockableHashMap};

#[path = "serializer/goals.rs"]
mod goals;

const TASKS: u64 = 100_000;
const KEYS: u64 = 1_000;
const PRODUCERS: u64 = 8;

/// Counts live and peak heap bytes so the memory pass can report them.
struct CountingAlloc;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// Counting is on only during the memory pass: shared atomic counters on every
/// allocation would slow down, under contention, whichever implementation
/// allocates more, and distort the timings.
static COUNTING: AtomicBool = AtomicBool::new(false);

// SAFETY: every method forwards to `System` with the caller's own layout and
// pointer, which upholds `GlobalAlloc`'s contract; the counters are plain
// atomics and never touch the allocation.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged (see the impl).
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() && COUNTING.load(Ordering::Relaxed) {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// One way of serializing tasks per key.
trait KeyedLock: Send + Sync + 'static {
    const NAME: &'static str;
    fn new() -> Self;
    fn run(self: &Arc<Self>, key: u64) -> impl Future<Output = ()> + Send + 'static;
    fn retained_keys(&self) -> usize;
}

impl KeyedLock for Serializer<u64> {
    const NAME: &'static str = "heldlock";
    fn new() -> Self {
        Serializer::new()
    }
    fn run(self: &Arc<Self>, key: u64) -> impl Future<Output = ()> + Send + 'static {
        self.serialize(key, async move {
            black_box(key);
        })
    }
    fn retained_keys(&self) -> usize {
        self.pending_keys()
    }
}

/// The usual hand-rolled map of tokio mutexes (keys are never removed),
/// with the standard library's hasher (SipHash): the baseline.
struct TokioMutexMap<S = std::hash::RandomState>(
    Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>, S>>,
);

/// The same map with heldlock's own hasher (foldhash), to tell what the
/// hasher gives from what the serializer's design gives.
type TokioMutexMapFoldhash = TokioMutexMap<foldhash::fast::RandomState>;

/// The same map of `async_lock::Mutex`es (standard library hasher).
struct AsyncLockMap(Mutex<HashMap<u64, Arc<async_lock::Mutex<()>>>>);

impl KeyedLock for AsyncLockMap {
    const NAME: &'static str = "async_lock_map";
    fn new() -> Self {
        AsyncLockMap(Mutex::new(HashMap::default()))
    }
    fn run(self: &Arc<Self>, key: u64) -> impl Future<Output = ()> + Send + 'static {
        let this = Arc::clone(self);
        async move {
            let mutex = Arc::clone(this.0.lock().unwrap().entry(key).or_default());
            let _guard = mutex.lock().await;
            black_box(key);
        }
    }
    fn retained_keys(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// A name per hasher.
trait HasherName: BuildHasher + Default + Send + Sync + 'static {
    const NAME: &'static str;
}

impl HasherName for std::hash::RandomState {
    const NAME: &'static str = "tokio_mutex_map";
}

impl HasherName for foldhash::fast::RandomState {
    const NAME: &'static str = "tokio_mutex_map_foldhash";
}

impl<S: HasherName> KeyedLock for TokioMutexMap<S> {
    const NAME: &'static str = S::NAME;
    fn new() -> Self {
        TokioMutexMap(Mutex::new(HashMap::default()))
    }
    fn run(self: &Arc<Self>, key: u64) -> impl Future<Output = ()> + Send + 'static {
        let this = Arc::clone(self);
        async move {
            let mutex = Arc::clone(this.0.lock().unwrap().entry(key).or_default());
            let _guard = mutex.lock().await;
            black_box(key);
        }
    }
    fn retained_keys(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

struct Lockable(LockableHashMap<u64, ()>);

impl KeyedLock for Lockable {
    const NAME: &'static str = "lockable";
    fn new() -> Self {
        Lockable(LockableHashMap::new())
    }
    fn run(self: &Arc<Self>, key: u64) -> impl Future<Output = ()> + Send + 'static {
        let this = Arc::clone(self);
        async move {
            let _guard = this
                .0
                .async_lock(key, AsyncLimit::no_limit())
                .await
                .unwrap();
            black_box(key);
        }
    }
    fn retained_keys(&self) -> usize {
        self.0.num_entries_or_locked()
    }
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap()
}

async fn submit_all<L: KeyedLock>(lock: &Arc<L>, keys: u64) {
    join_all((0..TASKS).map(|i| lock.run(i % keys))).await;
}

/// Spawns every task first, then awaits them in spawn order.
async fn spawn_all<L: KeyedLock>(lock: &Arc<L>, keys: u64) {
    let handles: Vec<_> = (0..TASKS)
        .map(|i| tokio::spawn(lock.run(i % keys)))
        .collect();
    for handle in handles {
        handle.await.unwrap();
    }
}

async fn producers<L: KeyedLock>(lock: &Arc<L>) {
    let handles: Vec<_> = (0..PRODUCERS)
        .map(|_| {
            let lock = Arc::clone(lock);
            tokio::spawn(async move {
                for _ in 0..TASKS / PRODUCERS {
                    lock.run(0).await;
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.unwrap();
    }
}

fn bench_impl<L: KeyedLock>(c: &mut Criterion) {
    let (single, multi) = (current_thread(), multi_thread());
    let mut group = c.benchmark_group("serializer");
    group
        .sample_size(10)
        .throughput(Throughput::Elements(TASKS));
    group.bench_function(BenchmarkId::new("one_key", L::NAME), |b| {
        b.iter(|| single.block_on(submit_all(&Arc::new(L::new()), 1)))
    });
    group.bench_function(BenchmarkId::new("thousand_keys", L::NAME), |b| {
        b.iter(|| single.block_on(submit_all(&Arc::new(L::new()), KEYS)))
    });
    group.bench_function(BenchmarkId::new("eight_producers", L::NAME), |b| {
        b.iter(|| multi.block_on(producers(&Arc::new(L::new()))))
    });
    group.bench_function(BenchmarkId::new("spawn_one_key", L::NAME), |b| {
        b.iter(|| multi.block_on(spawn_all(&Arc::new(L::new()), 1)))
    });
    group.bench_function(BenchmarkId::new("spawn_thousand_keys", L::NAME), |b| {
        b.iter(|| multi.block_on(spawn_all(&Arc::new(L::new()), KEYS)))
    });
    group.finish();
}

/// Runs each scenario once and reports peak heap growth and retained keys.
/// Peak heap per `(implementation, case)`, for the goals.
type Peaks = Vec<(&'static str, &'static str, usize)>;

fn memory_pass<L: KeyedLock>(peaks: &mut Peaks) {
    let (single, multi) = (current_thread(), multi_thread());
    let mut measure = |name: &'static str, run: &dyn Fn(&Arc<L>)| {
        let lock = Arc::new(L::new());
        // Frees of memory allocated before counting began may drive LIVE
        // below its start; it wraps, which `wrapping_sub` undoes.
        LIVE.store(0, Ordering::Relaxed);
        PEAK.store(0, Ordering::Relaxed);
        COUNTING.store(true, Ordering::Relaxed);
        run(&lock);
        COUNTING.store(false, Ordering::Relaxed);
        let peak = PEAK.load(Ordering::Relaxed);
        println!(
            "memory {:<16} {:<16} peak {:>9.1} KiB, {:>5} keys retained after drain",
            name,
            L::NAME,
            peak as f64 / 1024.0,
            lock.retained_keys(),
        );
        peaks.push((L::NAME, name, peak));
    };
    measure("one_key", &|l| single.block_on(submit_all(l, 1)));
    measure("thousand_keys", &|l| single.block_on(submit_all(l, KEYS)));
    measure("eight_producers", &|l| multi.block_on(producers(l)));
    measure("spawn_one_key", &|l| multi.block_on(spawn_all(l, 1)));
    measure("spawn_thousand_keys", &|l| {
        multi.block_on(spawn_all(l, KEYS))
    });
}

/// The environment variable that makes this binary a resident-set probe.
const RSS_PROBE: &str = "HELDLOCK_SERIALIZER_RSS";

/// A `kB` field of `/proc/self/status`, in bytes (`None` off Linux).
fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// In a probe process: runs one spawn case once and prints its peak RSS.
fn rss_probe<L: KeyedLock>(case: &str) {
    let multi = multi_thread();
    let lock = Arc::new(L::new());
    let keys = match case {
        "spawn_one_key" => 1,
        "spawn_thousand_keys" => KEYS,
        other => panic!("unknown case {other}"),
    };
    let before = proc_status_bytes("VmRSS:").unwrap_or(0);
    multi.block_on(spawn_all(&lock, keys));
    let peak = proc_status_bytes("VmHWM:").unwrap_or(0);
    println!(
        "rss    {:<20} {:<24} peak {:>6.1} MiB, +{:>5.1} MiB over the {:.1} MiB before",
        case,
        L::NAME,
        peak as f64 / 1048576.0,
        peak.saturating_sub(before) as f64 / 1048576.0,
        before as f64 / 1048576.0,
    );
}

/// Runs every spawn case of every implementation in a fresh process.
fn rss_pass() {
    let exe = std::env::current_exe().unwrap();
    for case in ["spawn_one_key", "spawn_thousand_keys"] {
        for name in [
            <Serializer<u64> as KeyedLock>::NAME,
            TokioMutexMap::<std::hash::RandomState>::NAME,
            TokioMutexMapFoldhash::NAME,
            AsyncLockMap::NAME,
            Lockable::NAME,
        ] {
            let output = std::process::Command::new(&exe)
                .env(RSS_PROBE, format!("{name}/{case}"))
                .output()
                .unwrap();
            assert!(output.status.success(), "probe {name}/{case} failed");
            print!("{}", String::from_utf8_lossy(&output.stdout));
        }
    }
}

fn main() {
    if let Ok(probe) = std::env::var(RSS_PROBE) {
        let (name, case) = probe.split_once('/').unwrap();
        match name {
            <Serializer<u64> as KeyedLock>::NAME => rss_probe::<Serializer<u64>>(case),
            TokioMutexMap::<std::hash::RandomState>::NAME => rss_probe::<TokioMutexMap>(case),
            TokioMutexMapFoldhash::NAME => rss_probe::<TokioMutexMapFoldhash>(case),
            AsyncLockMap::NAME => rss_probe::<AsyncLockMap>(case),
            Lockable::NAME => rss_probe::<Lockable>(case),
            other => panic!("unknown implementation {other}"),
        }
        return;
    }
    let mut peaks = Peaks::new();
    // Set to skip both memory passes, e.g. for repeated timing runs.
    if std::env::var_os("HELDLOCK_BENCH_NO_MEMORY").is_none() {
        memory_pass::<Serializer<u64>>(&mut peaks);
        memory_pass::<TokioMutexMap>(&mut peaks);
        memory_pass::<TokioMutexMapFoldhash>(&mut peaks);
        memory_pass::<AsyncLockMap>(&mut peaks);
        memory_pass::<Lockable>(&mut peaks);
        rss_pass();
    }
    let mut c = Criterion::default().configure_from_args();
    bench_impl::<Serializer<u64>>(&mut c);
    bench_impl::<TokioMutexMap>(&mut c);
    bench_impl::<TokioMutexMapFoldhash>(&mut c);
    bench_impl::<AsyncLockMap>(&mut c);
    bench_impl::<Lockable>(&mut c);
    c.final_summary();
    if std::env::args().any(|a| a == "--bench") {
        goals::report(&peaks);
    }
}
