//! A helper process for `cargo xtask bench handoff` (`tests/benches/handoff.rs`):
//! one lock kind, one job, driven by the bench.
//!
//! ```text
//! heldlock-bench-worker <kind> contend <lock> <counter> <times> <log>
//! heldlock-bench-worker <kind> pairs <lock> <times>
//! heldlock-bench-worker <kind> hold <lock>
//! heldlock-bench-worker <kind> wait <lock>
//! heldlock-bench-worker <kind> handover <lock>
//!
//! <kind> = heldlock | heldlock-new | heldlock-new-mt | floor | reference-floor
//!        | flock | reference <poll-ms> | heldlock-bounded <bound-us>
//! ```
//!
//! Kinds (stale 30 s wherever there is one; waits give up after 120 s):
//!
//! * `heldlock`: `heldlock_tokio::FileLock` with its defaults except stale
//!   30 s and `max_wait` 120 s, on a current-thread tokio runtime;
//! * `heldlock-new`: the same, but a new `FileLock` for every acquisition
//!   (as a caller that makes one per call does);
//! * `heldlock-new-mt`: `heldlock-new` on a multi-thread tokio runtime with
//!   one worker, each call driven by `block_on` from outside it (the
//!   heartbeat task runs on the worker);
//! * `heldlock-bounded <bound-us>`: `heldlock` with bounded waiting
//!   (`LockOptions::bounded_wait`) of `bound-us` microseconds;
//! * `floor`: the bare system calls of heldlock's protocol
//!   (`heldlock_tests::floor`: `open O_EXCL`, `fstat`, `write`, `futimens`;
//!   release `lstat`, `pread`, `rename`, `lstat`, `pread`, `unlink`,
//!   `close`), no logic; a waiter retries the create at once, with a
//!   `sched_yield` in between;
//! * `reference-floor`: the reference's protocol as its bare system calls
//!   (`heldlock_tests::floor::ReferenceFloor`, 7 a pair), waiting as `floor`;
//! * `flock`: `std::fs::File::lock` (blocking `flock`) on a file opened once;
//! * `reference <poll-ms>`: the TypeScript reference's protocol
//!   (`withHeldFileLock`) step by step: `mkdir -p`, `open("wx")`, write,
//!   close; on `EEXIST` `stat` for staleness (and the reference's break when
//!   stale), then sleep `min(poll, time left)`; release reads the lock,
//!   renames it to trash, reads the trash, unlinks it. Its heartbeat (every
//!   10 s at stale 30 s) never fires during these short holds and is left out;
//!   the record's time is written in epoch milliseconds instead of ISO 8601.
//!
//! Jobs:
//!
//! * `contend`: prints `ready`, waits for a line on stdin (the start
//!   signal), then does `times` read-modify-write increments of the counter
//!   file (`<value> <pid>`) under the lock, and writes one line per
//!   acquisition to `log`: `<call> <held> <cs-end> <released> <value>`, the
//!   first four in nanoseconds since the epoch (`CLOCK_REALTIME`, comparable
//!   between processes): acquire called, lock held, critical section done,
//!   release returned;
//! * `pairs`: `times` uncontended acquire + release pairs after a warm-up;
//!   prints the nanoseconds they took;
//! * `hold`: acquires, prints `held`, and waits to be killed;
//! * `wait`: prints `waiting`, acquires, prints the time it held the lock
//!   (nanoseconds since the epoch), releases;
//! * `handover`: acquires, prints `held`, waits for a line on stdin, then
//!   releases and prints the time it called the release (nanoseconds since
//!   the epoch).
//!
//! Every failure (a file-system error, a lock found not ours at release, a
//! wait that timed out) ends the process with a message and exit code 1.

use std::fmt::Display;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use heldlock_core::LockOptions;
use heldlock_tokio::{FileLock, HeldLock};

type Error = Box<dyn std::error::Error>;
type Result<T, E = Error> = std::result::Result<T, E>;

/// The stale period of every kind that has one.
const STALE: Duration = Duration::from_secs(30);
/// How long any acquisition may wait before the worker fails.
const MAX_WAIT: Duration = Duration::from_secs(120);
/// How long `hold` keeps the lock if nobody kills it.
const HOLD: Duration = Duration::from_secs(3600);
/// Uncontended pairs done before `pairs` starts timing.
const WARM_UP: u32 = 200;

const USAGE: &str = "usage: heldlock-bench-worker \
                     <heldlock|heldlock-new|heldlock-new-mt|floor|reference-floor|flock|reference POLL-MS|heldlock-bounded BOUND-US> \
                     (contend LOCK COUNTER TIMES LOG | pairs LOCK TIMES | hold LOCK | wait LOCK | handover LOCK)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("heldlock-bench-worker {}: {error}", args.join(" "));
            ExitCode::FAILURE
        }
    }
}

/// Adds what was being done to an error.
trait Context<T> {
    fn context(self, what: impl Display) -> Result<T>;
}

impl<T, E: Display> Context<T> for Result<T, E> {
    fn context(self, what: impl Display) -> Result<T> {
        self.map_err(|e| format!("{what}: {e}").into())
    }
}

fn run(args: &[String]) -> Result<()> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (kind, job) = match args.as_slice() {
        ["reference", poll, job @ ..] => {
            let poll: u64 = poll.parse().context(format!("bad poll {poll:?}"))?;
            (Kind::Reference(Duration::from_millis(poll)), job)
        }
        ["heldlock-bounded", bound, job @ ..] => {
            let bound: u64 = bound.parse().context(format!("bad bound {bound:?}"))?;
            (Kind::Bounded(Duration::from_micros(bound)), job)
        }
        [kind, job @ ..] => (
            match *kind {
                "heldlock" => Kind::Heldlock(Fresh::No),
                "heldlock-new" => Kind::Heldlock(Fresh::CurrentThread),
                "heldlock-new-mt" => Kind::Heldlock(Fresh::MultiThread),
                "floor" => Kind::Floor,
                "reference-floor" => Kind::ReferenceFloor,
                "flock" => Kind::Flock,
                _ => return Err(USAGE.into()),
            },
            job,
        ),
        _ => return Err(USAGE.into()),
    };
    match job {
        ["contend", lock, counter, times, log] => {
            let times = times.parse().context(format!("bad times {times:?}"))?;
            contend(kind, lock.as_ref(), counter.as_ref(), times, log.as_ref())
        }
        ["pairs", lock, times] => {
            let times = times.parse().context(format!("bad times {times:?}"))?;
            pairs(kind, lock.as_ref(), times)
        }
        ["hold", lock] => {
            let mut lock = Contender::new(kind, lock.as_ref())?;
            lock.acquire()?;
            say("held")?;
            lock.hold(HOLD);
            lock.release()
        }
        ["handover", lock] => {
            let mut lock = Contender::new(kind, lock.as_ref())?;
            lock.acquire()?;
            say("held")?;
            let mut go = String::new();
            io::stdin()
                .lock()
                .read_line(&mut go)
                .context("read the release signal")?;
            let releasing = epoch_ns();
            lock.release()?;
            say(releasing)
        }
        ["wait", lock] => {
            let mut lock = Contender::new(kind, lock.as_ref())?;
            say("waiting")?;
            lock.acquire()?;
            let held = epoch_ns();
            say(held)?;
            lock.release()
        }
        _ => Err(USAGE.into()),
    }
}

/// Prints one line to the bench, at once.
fn say(line: impl Display) -> Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}").context("write to stdout")?;
    out.flush().context("flush stdout")
}

/// Nanoseconds since the epoch (`CLOCK_REALTIME`, the same in every process).
fn epoch_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn contend(kind: Kind, lock: &Path, counter: &Path, times: u32, log: &Path) -> Result<()> {
    let mut lock = Contender::new(kind, lock)?;
    let mut entries = String::with_capacity(80 * times as usize);
    say("ready")?;
    let mut start = String::new();
    io::stdin()
        .lock()
        .read_line(&mut start)
        .context("read the start signal")?;
    let pid = std::process::id();
    for _ in 0..times {
        let call = epoch_ns();
        lock.acquire()?;
        let held = epoch_ns();
        let value = increment(counter, pid)?;
        let cs_end = epoch_ns();
        lock.release()?;
        let released = epoch_ns();
        entries.push_str(&format!("{call} {held} {cs_end} {released} {value}\n"));
    }
    std::fs::write(log, entries).context(format!("write {}", log.display()))
}

/// The critical section: reads `<value> <pid>` (absent means 0), writes the
/// next value with our pid, and returns that value.
fn increment(counter: &Path, pid: u32) -> Result<u64> {
    let value: u64 = match std::fs::read_to_string(counter) {
        Ok(text) => {
            let first = text.split_whitespace().next().unwrap_or_default();
            first
                .parse()
                .context(format!("counter holds {text:?}, not a value"))?
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(format!("read {}: {e}", counter.display()).into()),
    };
    let next = value + 1;
    std::fs::write(counter, format!("{next} {pid}\n"))
        .context(format!("write {}", counter.display()))?;
    Ok(next)
}

fn pairs(kind: Kind, lock: &Path, times: u32) -> Result<()> {
    let mut lock = Contender::new(kind, lock)?;
    for _ in 0..WARM_UP {
        lock.acquire()?;
        lock.release()?;
    }
    let started = Instant::now();
    for _ in 0..times {
        lock.acquire()?;
        lock.release()?;
    }
    say(started.elapsed().as_nanos())
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Heldlock(Fresh),
    Floor,
    ReferenceFloor,
    Flock,
    Reference(Duration),
    /// `heldlock` with bounded waiting.
    Bounded(Duration),
}

/// Whether heldlock makes a new `FileLock` for every acquisition, and on
/// which runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fresh {
    /// One `FileLock`, current-thread runtime.
    No,
    /// A new one each time, current-thread runtime.
    CurrentThread,
    /// A new one each time, multi-thread runtime with one worker.
    MultiThread,
}

/// One lock of the chosen kind, acquired and released in turn.
enum Contender {
    Heldlock(Box<Heldlock>),
    Floor(Floor),
    ReferenceFloor(Floor),
    Flock(File),
    Reference(Reference),
}

impl Contender {
    fn new(kind: Kind, path: &Path) -> Result<Self> {
        Ok(match kind {
            Kind::Heldlock(fresh) => {
                Contender::Heldlock(Box::new(Heldlock::new(path, fresh, None)?))
            }
            Kind::Bounded(bound) => {
                Contender::Heldlock(Box::new(Heldlock::new(path, Fresh::No, Some(bound))?))
            }
            Kind::Floor => Contender::Floor(Floor::new(path, false)),
            Kind::ReferenceFloor => Contender::ReferenceFloor(Floor::new(path, true)),
            Kind::Flock => Contender::Flock(
                OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(path)
                    .context(format!("open {}", path.display()))?,
            ),
            Kind::Reference(poll) => Contender::Reference(Reference::new(path, poll)),
        })
    }

    fn acquire(&mut self) -> Result<()> {
        match self {
            Contender::Heldlock(lock) => lock.acquire(),
            Contender::Floor(lock) | Contender::ReferenceFloor(lock) => lock.acquire(),
            Contender::Flock(file) => file.lock().context("flock"),
            Contender::Reference(lock) => lock.acquire(),
        }
    }

    fn release(&mut self) -> Result<()> {
        match self {
            Contender::Heldlock(lock) => lock.release(),
            Contender::Floor(lock) | Contender::ReferenceFloor(lock) => lock.release(),
            Contender::Flock(file) => file.unlock().context("unlock the flock"),
            Contender::Reference(lock) => lock.release(),
        }
    }

    /// Keeps the lock for `duration` (heldlock's heartbeat keeps running).
    fn hold(&mut self, duration: Duration) {
        match self {
            Contender::Heldlock(lock) => lock
                .runtime
                .block_on(async move { tokio::time::sleep(duration).await }),
            _ => std::thread::sleep(duration),
        }
    }
}

/// heldlock's `FileLock`, driven by a tokio runtime: each acquire and
/// release is one `block_on`, as a synchronous caller would do.
struct Heldlock {
    runtime: tokio::runtime::Runtime,
    path: PathBuf,
    /// `None` when every acquisition makes its own.
    lock: Option<FileLock>,
    held: Option<HeldLock>,
}

fn lock_options() -> LockOptions {
    LockOptions::new(STALE).max_wait(MAX_WAIT)
}

fn bounded_options(bound: Option<Duration>) -> LockOptions {
    match bound {
        Some(bound) => lock_options().bounded_wait(bound),
        None => lock_options(),
    }
}

impl Heldlock {
    fn new(path: &Path, fresh: Fresh, bound: Option<Duration>) -> Result<Self> {
        let runtime = match fresh {
            Fresh::No | Fresh::CurrentThread => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
            Fresh::MultiThread => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build(),
        }
        .context("build a tokio runtime")?;
        let lock = match fresh {
            Fresh::No => Some(FileLock::new(path, bounded_options(bound)).context("lock options")?),
            Fresh::CurrentThread | Fresh::MultiThread => None,
        };
        Ok(Heldlock {
            runtime,
            path: path.to_path_buf(),
            lock,
            held: None,
        })
    }

    fn acquire(&mut self) -> Result<()> {
        let held = match &self.lock {
            Some(lock) => self.runtime.block_on(lock.acquire()),
            None => {
                let lock = FileLock::new(&self.path, lock_options()).context("lock options")?;
                self.runtime.block_on(lock.acquire())
            }
        }
        .context("acquire")?;
        self.held = Some(held);
        Ok(())
    }

    fn release(&mut self) -> Result<()> {
        let held = self.held.take().ok_or("release without a held lock")?;
        let released = self.runtime.block_on(held.release()).context("release")?;
        match released {
            heldlock_core::Released::Released => Ok(()),
            other => Err(format!("release found the lock not ours: {other:?}").into()),
        }
    }
}

/// A protocol floor (`heldlock_tests::floor`: heldlock's, or the
/// reference's), with a waiter that retries the create at once, yielding
/// the processor in between.
enum Floor {
    Heldlock(heldlock_tests::floor::Floor),
    Reference(heldlock_tests::floor::ReferenceFloor),
}

impl Floor {
    fn new(path: &Path, reference: bool) -> Self {
        let pid = std::process::id();
        // As long as heldlock's record with its host fields.
        let record = format!(
            "{pid} 0b1f3c9e-8a57-4f43-9a0e-5b7c4d2e1f00 2026-01-01T00:00:00.000Z \
             host=bench boot=6f0e2a44-3b1c-4d5e-9f70-8a9b0c1d2e3f pidns=4026531836 start=123456\n"
        )
        .into_bytes();
        if reference {
            Floor::Reference(heldlock_tests::floor::ReferenceFloor::new(path, record))
        } else {
            Floor::Heldlock(heldlock_tests::floor::Floor::new(path, record))
        }
    }

    fn try_acquire(&mut self) -> io::Result<bool> {
        match self {
            Floor::Heldlock(floor) => floor.try_acquire(),
            Floor::Reference(floor) => floor.try_acquire(),
        }
    }

    fn acquire(&mut self) -> Result<()> {
        let started = Instant::now();
        while !self.try_acquire().context("create the lock")? {
            if started.elapsed() >= MAX_WAIT {
                return Err("gave up waiting for the lock".into());
            }
            std::thread::yield_now();
        }
        Ok(())
    }

    fn release(&mut self) -> Result<()> {
        match self {
            Floor::Heldlock(floor) => floor.release(),
            Floor::Reference(floor) => floor.release(),
        }
        .context("release the lock")
    }
}

/// The reference's `withHeldFileLock` protocol, as a poll loop.
struct Reference {
    path: PathBuf,
    dir: PathBuf,
    poll: Duration,
    /// The current acquisition's owner id (the reference's `randomUUID()`).
    owner: String,
    acquisitions: u64,
}

impl Reference {
    fn new(path: &Path, poll: Duration) -> Self {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Reference {
            path: path.to_path_buf(),
            dir,
            poll,
            owner: String::new(),
            acquisitions: 0,
        }
    }

    /// A trash name as the reference makes it: `<path>.<purpose>.<pid>.<ms>`.
    fn trash(&self, purpose: &str) -> PathBuf {
        let mut trash = self.path.as_os_str().to_owned();
        let ms = epoch_ns() / 1_000_000;
        trash.push(format!(".{purpose}.{}.{ms}", std::process::id()));
        trash.into()
    }

    /// `acquireLock`: `mkdir -p`, then `open("wx")` until created, breaking
    /// a stale lock and sleeping `min(poll, time left)` between tries.
    fn acquire(&mut self) -> Result<()> {
        std::fs::create_dir_all(&self.dir).context(format!("mkdir {}", self.dir.display()))?;
        self.acquisitions += 1;
        self.owner = format!(
            "{:08x}-0000-4000-8000-{:012x}",
            std::process::id(),
            self.acquisitions
        );
        let deadline = Instant::now() + MAX_WAIT;
        loop {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&self.path)
            {
                Ok(mut file) => {
                    let record = format!(
                        "{} {} {}\n",
                        std::process::id(),
                        self.owner,
                        epoch_ns() / 1_000_000
                    );
                    file.write_all(record.as_bytes())
                        .context("write the record")?;
                    return Ok(()); // the reference closes the file here
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    self.break_stale();
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(format!("timed out after {MAX_WAIT:?}").into());
                    }
                    std::thread::sleep(self.poll.min(deadline - now));
                }
                Err(e) => return Err(format!("create {}: {e}", self.path.display()).into()),
            }
        }
    }

    fn is_stale(meta: &std::fs::Metadata) -> bool {
        meta.modified()
            .ok()
            .and_then(|mtime| SystemTime::now().duration_since(mtime).ok())
            .is_some_and(|age| age > STALE)
    }

    /// `breakStaleLock`: never fails; a lock that is fresh, vanished or
    /// changed is left alone.
    fn break_stale(&self) {
        let fresh_or_gone =
            |path: &Path| std::fs::metadata(path).map_or(true, |m| !Self::is_stale(&m));
        if fresh_or_gone(&self.path) {
            return;
        }
        let Ok(identity) = std::fs::read(&self.path) else {
            return;
        };
        // Re-validate just before the break: same content, still stale.
        if std::fs::read(&self.path).ok().as_ref() != Some(&identity) || fresh_or_gone(&self.path) {
            return;
        }
        let trash = self.trash("breaking");
        if std::fs::rename(&self.path, &trash).is_err() {
            return;
        }
        let restore = |trash: &Path| {
            if std::fs::hard_link(trash, &self.path).is_ok() {
                let _ = std::fs::remove_file(trash);
            }
        };
        match std::fs::read(&trash) {
            Ok(moved) if moved != identity => restore(&trash),
            Ok(_) => match std::fs::metadata(&trash) {
                Ok(meta) if !Self::is_stale(&meta) => restore(&trash),
                _ => {
                    let _ = std::fs::remove_file(&trash);
                }
            },
            Err(_) => {
                let _ = std::fs::remove_file(&trash);
            }
        }
    }

    /// `releaseLock`: read the lock (pre-check), rename it to trash, read
    /// the trash, unlink it. Where the reference only warns, the worker
    /// fails: in this benchmark the lock must always still be ours.
    fn release(&mut self) -> Result<()> {
        let precheck = std::fs::read_to_string(&self.path).context("read the lock")?;
        if !precheck.contains(&self.owner) {
            return Err("release found the lock not ours".into());
        }
        let trash = self.trash("releasing");
        std::fs::rename(&self.path, &trash).context("rename to trash")?;
        let moved = std::fs::read_to_string(&trash).context("read the trash")?;
        if !moved.contains(&self.owner) {
            return Err("the lock moved to trash is not ours".into());
        }
        std::fs::remove_file(&trash).context("unlink the trash")
    }
}
