//! Same-host waiters of one lock take turns watching it.
//!
//! A release wakes whoever watches the lock's directory. With every waiting
//! process watching, every release wakes all of them, and under contention
//! all but one (usually all: the releasing process tends to take the lock
//! straight back) only find the lock taken again: CPU per hand-off grows with
//! the number of waiters. So the waiting processes of one host queue in the
//! kernel instead, for an exclusive `flock(2)` on a queue file of that lock
//! (see [`queue_name`]). The process holding that `flock` (the *leader*)
//! watches the lock as before; the others sleep in `flock`, which costs
//! nothing and wakes nobody, until the leader stops waiting because it got
//! the lock, gave up, or died (the kernel drops a dead process's `flock`).
//! The kernel then hands the turn to the next process in line.
//!
//! The queue files live in a directory of this user's own (see [`Home`]), so
//! no other user can hold a turn forever, and they are removed by the last
//! process to stop waiting (see [`Membership`]), so none is left once nobody
//! waits.
//!
//! The queue is a wake-up hint and decides nothing about the lock: every
//! waiter keeps its poll interval as the safety net, so a leader that hangs
//! while waiting (a stopped process) costs the others at most their poll
//! interval per attempt, never the lock. When the queue directory is not
//! private or the queue files cannot be opened or `flock`ed, every waiter
//! watches, as without the queue; when two processes disagree on the queue
//! directory (another `XDG_RUNTIME_DIR` or `TMPDIR`, another user, a private
//! `/tmp`), each group has its own leader, which costs a wake-up each,
//! nothing more.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use heldlock_core::ChangeListener;
use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags};
use rustix::io::Errno;

use crate::watch::{self, Notify};

/// This process's place in one lock's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Not queued: nobody here waits, or nobody has asked yet.
    Idle,
    /// A thread of this process sleeps in `flock` for the turn.
    Queued,
    /// This process holds the turn: its waiter watches the lock.
    Leader,
}

#[derive(Debug)]
struct State {
    role: Role,
    /// This process's membership of the queue while it takes part (queued or
    /// leading). Not kept while idle, even while the queue thread lives: a
    /// member keeps the last one to leave from removing the queue files.
    member: Option<Arc<Membership>>,
    /// Live listeners of this process's waiters for this lock.
    interest: usize,
    /// Whether this entry's queue thread is alive (waiting for work, or in
    /// `flock`). It outlives one wait, so that a process that waits again
    /// and again does not start a thread each time.
    thread: bool,
    /// How many queue threads this entry started (one per idle period).
    threads_started: u32,
    /// The turn's `flock` failed where it should not: every waiter of this
    /// process watches for as long as this entry lives.
    broken: bool,
}

/// Which queue: where its files are, and their name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct QueueId {
    home: Home,
    name: String,
}

/// One lock's queue, as seen from this process.
#[derive(Debug)]
struct Turns {
    id: QueueId,
    state: Mutex<State>,
    /// Tells the queue thread that there is a turn to wait for.
    work: Condvar,
    /// Fired when this process becomes the leader.
    turn_came: Arc<Notify>,
}

impl Turns {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The queues this process takes part in.
#[derive(Debug, Default)]
struct Registry {
    /// By the lock path a waiter gave (found without a system call).
    by_lock: HashMap<PathBuf, Arc<Turns>>,
    /// By queue: every path to one lock leads to one entry.
    by_queue: HashMap<QueueId, Arc<Turns>>,
}

fn queues() -> MutexGuard<'static, Registry> {
    static QUEUES: OnceLock<Mutex<Registry>> = OnceLock::new();
    QUEUES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Where this user's queue files go: `$XDG_RUNTIME_DIR` when it is set and
/// private, else `$TMPDIR/heldlock-<euid>`, made on first use with mode
/// 0700. Taken from the environment whenever this process starts to wait
/// for a lock it does not wait for yet; tests give their own.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Home {
    runtime_dir: Option<PathBuf>,
    temp_dir: PathBuf,
}

impl Home {
    fn from_env() -> Self {
        Home {
            runtime_dir: std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
            temp_dir: std::env::temp_dir(),
        }
    }

    /// The directory of the queue files, opened and found private.
    fn open_dir(&self) -> Result<OwnedFd, NoQueue> {
        // The runtime directory is the user's own by specification (mode
        // 0700, emptied at logout), but a process often inherits one that
        // is not its own (`sudo` keeps the invoking user's), hence checked;
        // a relative one is ignored, as the specification says.
        if let Some(runtime) = self.runtime_dir.as_deref().filter(|dir| dir.is_absolute())
            && let Ok(dir) = open_private_dir(runtime)
        {
            return Ok(dir);
        }
        // A directory of its own in the shared temporary directory: only
        // there can the queue files be out of other users' reach. It stays
        // when empty: in a sticky directory such as `/tmp` no other user can
        // take its name from us while it exists, and removing it after each
        // wait would give them that chance every time. `mkdir` creates a
        // new directory or fails: it neither follows a link nor changes
        // what is there (which is then checked like anything found), and a
        // umask only takes bits away from 0700.
        let per_user = self
            .temp_dir
            .join(format!("heldlock-{}", rustix::process::geteuid().as_raw()));
        match rustix::fs::mkdir(&per_user, Mode::RWXU) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(error) => return Err(NoQueue::Io(error)),
        }
        open_private_dir(&per_user)
    }
}

/// Opens the directory at `path` if it is private: a real directory (a
/// symbolic link is not followed), owned by this user, with no permission
/// for its group or others. It is checked through the descriptor and used
/// only through it (the queue files are opened relative to it), so the
/// directory checked is the one used, whatever becomes of the path.
fn open_private_dir(path: &Path) -> Result<OwnedFd, NoQueue> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let dir = rustix::fs::open(path, flags, Mode::empty()).map_err(NoQueue::Io)?;
    let stat = rustix::fs::fstat(&dir).map_err(NoQueue::Io)?;
    let mode = Mode::from_raw_mode(stat.st_mode);
    if stat.st_uid != rustix::process::geteuid().as_raw()
        || mode.intersects(Mode::RWXG | Mode::RWXO)
    {
        return Err(NoQueue::NotPrivate {
            owner: stat.st_uid,
            mode,
        });
    }
    Ok(dir)
}

/// Why a waiter watches without the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoQueue {
    Io(Errno),
    /// The queue directory is not this user's alone.
    NotPrivate {
        owner: u32,
        mode: Mode,
    },
    /// Something other than a regular file at a queue file's name.
    NotAFile,
    /// The queue files were being removed at every attempt.
    Busy,
}

impl fmt::Display for NoQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoQueue::Io(error) => write!(f, "{error}"),
            NoQueue::NotPrivate { owner, mode } => write!(
                f,
                "the queue directory is not private (owner {owner}, mode {:o})",
                mode.bits()
            ),
            NoQueue::NotAFile => f.write_str("not a regular file at a queue file's name"),
            NoQueue::Busy => f.write_str("the queue files kept being removed"),
        }
    }
}

/// The name of the queue of the lock at `lock` (its files add a suffix):
/// after the lock's directory by device and inode (every path to it agrees)
/// and a stable hash of the lock's file name. The queue directory is not the
/// lock's, so that the lock's directory holds nothing but locks, and so that
/// the queue stays on this host even when the lock is on a network file
/// system. `None` when the lock's directory cannot be found.
fn queue_name(lock: &Path) -> Option<String> {
    let name = lock.file_name()?;
    let dir = match lock.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let dir = rustix::fs::stat(dir).ok()?;
    Some(format!(
        "heldlock-{:x}-{:x}-{:016x}",
        dir.st_dev,
        dir.st_ino,
        crate::record::stable_hash(crate::record::FNV_OFFSET_BASIS, name.as_bytes()),
    ))
}

/// How many times [`join`] starts over after finding the queue files
/// removed, or being removed, under it.
const JOIN_ATTEMPTS: u32 = 8;

/// This process's part in one lock's queue, for as long as it lives. A queue
/// is two empty files: the *turn* file, whose exclusive `flock` is the turn,
/// and the *waiters* file, which every member holds a shared `flock` on. The
/// last member to leave removes both; dropping a membership leaves.
///
/// Why no member is ever left behind on a removed file (which would split
/// the queue, and leave the files of the part nobody joins any more):
///
/// * The files are removed only by a member that holds the waiters file
///   exclusively: its shared lock traded for an exclusive one that is
///   granted only when no other open description of the file holds a lock,
///   that is when no other member exists, in this process or another.
/// * A newcomer takes its shared lock without waiting, then checks that the
///   waiters file's name still leads to the file it locked (`statat`
///   against `fstat`), and only then opens the turn file. Against a
///   removal it either locks first (and the remover, seeing a member, does
///   not remove), or it cannot lock while the remover holds the file, or it
///   locks once the remover has removed the names and closed the file, and
///   then finds the name gone or leading to a new file: it drops what it
///   opened and starts over. The turn file it opens is therefore always the
///   one at its name while it is a member.
/// * The turn file is removed before the waiters file: a newcomer whose
///   waiters file is a new one (created once the old name was gone) opens
///   the turn file only after that, so never the one being removed.
/// * A member opens the turn file only after joining and closes it when it
///   leaves: no turn file outlives its membership.
///
/// The shared lock is not waited for: a remover holds the file only for a
/// few system calls, but a remover stopped there would stop every newcomer
/// with it. A newcomer that keeps finding it held gives up and watches.
#[derive(Debug)]
struct Membership {
    /// The private queue directory; every name below is relative to it.
    dir: OwnedFd,
    waiters_name: String,
    turn_name: String,
    /// Held with a shared `flock` while this membership lives.
    waiters: OwnedFd,
    /// Its exclusive `flock` is the turn.
    turn: OwnedFd,
    /// The process that joined. A child forked without `exec` shares the
    /// open file descriptions, hence the locks, and must leave them alone:
    /// unlocking there would take its parent's turn or place away.
    pid: u32,
}

/// Moments in joining and leaving at which another process may act: a test
/// acts there, deterministically, as that process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// A newcomer opened the waiters file and has not locked it yet.
    WaitersOpened,
    /// The last member removed the turn file, not yet the waiters file.
    BetweenRemovals,
}

#[cfg(not(test))]
fn step(_: Step) {}

#[cfg(test)]
fn step(at: Step) {
    tests::at_step(at);
}

/// Joins the queue named `name` in `home`'s queue directory.
fn join(home: &Home, name: &str) -> Result<Membership, NoQueue> {
    let waiters_name = format!("{name}.waiters");
    let turn_name = format!("{name}.turn");
    for _ in 0..JOIN_ATTEMPTS {
        let dir = home.open_dir()?;
        let waiters = match open_queue_file(&dir, &waiters_name) {
            // The directory was removed after it was opened (by a cleaner
            // of temporary files: heldlock leaves it): made again next time.
            Err(NoQueue::Io(Errno::NOENT)) => continue,
            other => other?,
        };
        step(Step::WaitersOpened);
        match rustix::fs::flock(&waiters, FlockOperation::NonBlockingLockShared) {
            Ok(()) => {}
            // The last member is removing the files.
            Err(Errno::WOULDBLOCK) => {
                std::thread::yield_now();
                continue;
            }
            Err(error) => return Err(NoQueue::Io(error)),
        }
        if !still_named(&dir, &waiters_name, &waiters)? {
            continue;
        }
        let turn = open_queue_file(&dir, &turn_name)?;
        return Ok(Membership {
            dir,
            waiters_name,
            turn_name,
            waiters,
            turn,
            pid: std::process::id(),
        });
    }
    Err(NoQueue::Busy)
}

impl Membership {
    /// Takes the turn if nobody has it.
    fn try_lead(&self) -> rustix::io::Result<()> {
        rustix::fs::flock(&self.turn, FlockOperation::NonBlockingLockExclusive)
    }

    /// Sleeps until the turn comes.
    fn wait_for_turn(&self) -> rustix::io::Result<()> {
        loop {
            match rustix::fs::flock(&self.turn, FlockOperation::LockExclusive) {
                Err(Errno::INTR) => continue,
                other => return other,
            }
        }
    }

    /// Gives the turn up, if this member has it: the kernel wakes the next
    /// member in line.
    fn pass_turn(&self) {
        if self.pid == std::process::id() {
            // Closing the file would release the turn too; unlocking says
            // so, and does not wait for the last clone of the membership.
            let _ = rustix::fs::flock(&self.turn, FlockOperation::Unlock);
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        if self.pid != std::process::id() {
            return;
        }
        self.pass_turn();
        // Fails while any other member holds its shared lock. A failed
        // trade loses this member's shared lock, which it is giving up
        // anyway.
        if rustix::fs::flock(&self.waiters, FlockOperation::NonBlockingLockExclusive).is_err() {
            return;
        }
        if remove_queue(
            &self.dir,
            &self.waiters_name,
            &self.turn_name,
            &self.waiters,
        ) {
            // Newcomers that opened the removed file start over now, not
            // after the sweep.
            let _ = rustix::fs::flock(&self.waiters, FlockOperation::Unlock);
            if sweep_due(&self.dir) {
                sweep_abandoned(&self.dir);
            }
        }
    }
}

/// Removes a queue's files, given its waiters file `waiters` held
/// exclusively (see [`Membership`]); whether it did.
fn remove_queue(dir: &OwnedFd, waiters_name: &str, turn_name: &str, waiters: &OwnedFd) -> bool {
    // Only a process of this user that is not heldlock could have moved the
    // name meanwhile; then whatever it names is not this queue's.
    if still_named(dir, waiters_name, waiters) != Ok(true) {
        return false;
    }
    // The turn file first (see `Membership`). Should a removal fail, the
    // file stays at its name and whoever comes next uses it.
    let _ = rustix::fs::unlinkat(dir, turn_name, AtFlags::empty());
    step(Step::BetweenRemovals);
    let _ = rustix::fs::unlinkat(dir, waiters_name, AtFlags::empty());
    // Only once the exclusive lock ends can a newcomer that opened the old
    // waiters file lock it, and find its name gone.
    true
}

/// How often at most a process sweeps abandoned queues: a sweep lists the
/// queue directory, which must not happen every time a queue empties (under
/// contention, every few hand-offs).
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether this process is due to sweep the queue directory `dir`: the
/// first time one of its queues there empties, then at most once per
/// [`SWEEP_EVERY`].
fn sweep_due(dir: &OwnedFd) -> bool {
    static LAST: Mutex<Vec<(DirKey, std::time::Instant)>> = Mutex::new(Vec::new());
    let Some(key) = dir_key(dir) else {
        return false;
    };
    let now = std::time::Instant::now();
    let mut last = LAST.lock().unwrap_or_else(PoisonError::into_inner);
    match last.iter_mut().find(|(at, _)| *at == key) {
        Some((_, when)) if now.saturating_duration_since(*when) < SWEEP_EVERY => false,
        Some((_, when)) => {
            *when = now;
            true
        }
        None => {
            last.push((key, now));
            true
        }
    }
}

/// One directory, while it exists and after: device, inode and birth time
/// (an inode number alone is handed to the next directory made).
type DirKey = (u64, u64, i64, u32);

fn dir_key(dir: &OwnedFd) -> Option<DirKey> {
    let stat = rustix::fs::statx(
        dir,
        "",
        AtFlags::EMPTY_PATH,
        rustix::fs::StatxFlags::INO | rustix::fs::StatxFlags::BTIME,
    )
    .ok()?;
    let dev = (u64::from(stat.stx_dev_major) << 32) | u64::from(stat.stx_dev_minor);
    Some((
        dev,
        stat.stx_ino,
        stat.stx_btime.tv_sec,
        stat.stx_btime.tv_nsec,
    ))
}

/// Removes the queues in `dir` that have no member: left by processes that
/// were killed, or exited, while they waited (the kernel drops a dead
/// process's `flock`s, not its files). Done by whoever removes its own
/// queue's files, so that such leftovers last only until some queue of this
/// user next empties.
fn sweep_abandoned(dir: &OwnedFd) {
    let Ok(entries) = rustix::fs::Dir::read_from(dir) else {
        return;
    };
    // Listed first: the directory is not changed while it is read.
    let mut names: Vec<String> = entries
        .map_while(Result::ok)
        .filter_map(|entry| {
            let file = entry.file_name().to_str().ok()?;
            let name = file
                .strip_suffix(".waiters")
                .or_else(|| file.strip_suffix(".turn"))?;
            is_queue_name(name).then(|| name.to_owned())
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        let (waiters_name, turn_name) = (format!("{name}.waiters"), format!("{name}.turn"));
        // Taken exclusively at once, as by the last member to leave: only
        // when nobody is a member. A turn file without its waiters file
        // (whose removal failed where the waiters file's did not) gets one,
        // to be removed with it.
        let Ok(waiters) = open_queue_file(dir, &waiters_name) else {
            continue;
        };
        if rustix::fs::flock(&waiters, FlockOperation::NonBlockingLockExclusive).is_ok() {
            remove_queue(dir, &waiters_name, &turn_name, &waiters);
        }
    }
}

/// Whether `name` is one [`queue_name`] makes: the runtime directory holds
/// other programs' files, and no other name is touched.
fn is_queue_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("heldlock-") else {
        return false;
    };
    let parts: Vec<&str> = rest.split('-').collect();
    let hex = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_hexdigit());
    matches!(parts.as_slice(), [dev, ino, hash] if hex(dev) && hex(ino) && hash.len() == 16 && hex(hash))
}

/// Opens (creating it if missing) the queue file `name` in `dir`.
fn open_queue_file(dir: &OwnedFd, name: &str) -> Result<OwnedFd, NoQueue> {
    // Only this user can put anything in the private directory, but what a
    // mistake left at the name must not stop a waiter: a symbolic link is
    // not followed, and a FIFO or device is neither waited for
    // (`O_NONBLOCK`) nor made a terminal (`O_NOCTTY`), only refused.
    // Read-only is enough for `flock`.
    let flags = OFlags::RDONLY
        | OFlags::CREATE
        | OFlags::CLOEXEC
        | OFlags::NOFOLLOW
        | OFlags::NONBLOCK
        | OFlags::NOCTTY;
    let file =
        rustix::fs::openat(dir, name, flags, Mode::RUSR | Mode::WUSR).map_err(NoQueue::Io)?;
    let stat = rustix::fs::fstat(&file).map_err(NoQueue::Io)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(NoQueue::NotAFile);
    }
    Ok(file)
}

/// Whether `name` in `dir` still leads to `file`. Inode numbers are reused
/// only once a file is gone, and `file` is open: a new file at the name has
/// another inode.
fn still_named(dir: &OwnedFd, name: &str, file: &OwnedFd) -> Result<bool, NoQueue> {
    let held = rustix::fs::fstat(file).map_err(NoQueue::Io)?;
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(found) => Ok((found.st_dev, found.st_ino) == (held.st_dev, held.st_ino)),
        Err(Errno::NOENT) => Ok(false),
        Err(error) => Err(NoQueue::Io(error)),
    }
}

/// A listener for a waiter of the lock at `path`: if this process leads the
/// queue, it completes when the lock is released (see
/// [`watch::lock_removed`]); otherwise it completes when this process's turn
/// to watch comes. `None` when the lock cannot be watched at all.
pub(crate) fn listen(path: &Path) -> Option<ChangeListener> {
    listen_in(path, &Home::from_env())
}

fn listen_in(path: &Path, home: &Home) -> Option<ChangeListener> {
    // Watching must work at all, or the queue only delays the poll.
    if !watch::available() {
        return None;
    }
    let Some(interest) = Interest::enter(path, home) else {
        return watch::lock_removed(path);
    };
    match interest.take_turn() {
        Taken::Lead => {
            // Should this directory not be watchable, the turn is given up
            // (with `interest`) and the waiter polls.
            let released = watch::lock_removed(path)?;
            Some(InLine::keep(interest, released))
        }
        // A follower does not watch the lock at all.
        Taken::Wait(turn) => Some(InLine::keep(interest, turn)),
        Taken::Unavailable => {
            drop(interest);
            watch::lock_removed(path)
        }
    }
}

/// A waiter's listener that keeps this process's place in the queue until
/// it is dropped, not merely until it completes: a leader woken by a release
/// keeps the turn while its waiter subscribes again and tries the lock,
/// instead of passing it to the next process first and queueing behind it.
struct InLine {
    _interest: Interest,
    listener: ChangeListener,
}

impl InLine {
    fn keep(interest: Interest, listener: ChangeListener) -> ChangeListener {
        Box::pin(InLine {
            _interest: interest,
            listener,
        })
    }
}

impl Future for InLine {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.listener.as_mut().poll(cx)
    }
}

/// What a waiter gets from the queue.
enum Taken {
    Lead,
    Wait(ChangeListener),
    Unavailable,
}

/// Keeps this process in a lock's queue while a waiter listens. The last one
/// to go gives the turn up.
struct Interest {
    turns: Arc<Turns>,
}

impl Interest {
    fn enter(path: &Path, home: &Home) -> Option<Self> {
        {
            let queues = queues();
            if let Some(turns) = queues.by_lock.get(path)
                && turns.id.home == *home
            {
                // Counted under the registry's mutex, so that no
                // `forget_if_idle` can drop the entry in between.
                turns.state().interest += 1;
                return Some(Interest {
                    turns: Arc::clone(turns),
                });
            }
        }
        // Found outside the registry's mutex: it stats a directory.
        let id = QueueId {
            home: home.clone(),
            name: queue_name(path)?,
        };
        let mut queues = queues();
        // Another spelling of the same lock shares its queue entry: one
        // process must never queue behind itself.
        let turns = match queues.by_queue.get(&id) {
            Some(turns) => Arc::clone(turns),
            None => {
                let fresh = Arc::new(Turns {
                    id: id.clone(),
                    state: Mutex::new(State {
                        role: Role::Idle,
                        member: None,
                        interest: 0,
                        thread: false,
                        threads_started: 0,
                        broken: false,
                    }),
                    work: Condvar::new(),
                    turn_came: Arc::default(),
                });
                queues.by_queue.insert(id, Arc::clone(&fresh));
                fresh
            }
        };
        queues
            .by_lock
            .insert(path.to_path_buf(), Arc::clone(&turns));
        turns.state().interest += 1;
        Some(Interest { turns })
    }

    fn take_turn(&self) -> Taken {
        let turns = &self.turns;
        let mut state = turns.state();
        if state.broken {
            return Taken::Unavailable;
        }
        match state.role {
            Role::Leader => return Taken::Lead,
            Role::Queued => return Taken::Wait(turns.turn_came.listen()),
            Role::Idle => {}
        }
        // Idle, this process is no member (see `give_up_turn`). It joins
        // without the mutex: a file system can be slow.
        drop(state);
        let joined = join(&turns.id.home, &turns.id.name);
        state = turns.state();
        if state.role != Role::Idle || state.broken || state.member.is_some() {
            // Another waiter of this process got there meanwhile. Leaving
            // again removes nothing: that waiter's membership is a member.
            drop(state);
            drop(joined);
            return self.take_turn();
        }
        let member = match joined {
            Ok(member) => Arc::clone(state.member.insert(Arc::new(member))),
            Err(error) => {
                tracing::debug!(%error, queue = %turns.id.name, "no waiter queue; every waiter watches");
                return Taken::Unavailable;
            }
        };
        match member.try_lead() {
            Ok(()) => {
                state.role = Role::Leader;
                Taken::Lead
            }
            Err(Errno::WOULDBLOCK) => {
                // Listen before the thread can fire, or its news is lost.
                let turn = turns.turn_came.listen();
                if state.thread {
                    turns.work.notify_one();
                } else {
                    let waiting = Arc::clone(turns);
                    let spawned = std::thread::Builder::new()
                        .name("heldlock-queue".into())
                        .spawn(move || queue_thread(&waiting));
                    if spawned.is_err() {
                        let leaving = state.member.take();
                        drop(state);
                        drop((member, leaving));
                        return Taken::Unavailable;
                    }
                    state.thread = true;
                    state.threads_started += 1;
                }
                state.role = Role::Queued;
                Taken::Wait(turn)
            }
            Err(error) => {
                tracing::debug!(%error, queue = %turns.id.name, "cannot flock the waiter queue; every waiter watches");
                let leaving = state.member.take();
                drop(state);
                drop((member, leaving));
                Taken::Unavailable
            }
        }
    }
}

impl Drop for Interest {
    fn drop(&mut self) {
        let mut state = self.turns.state();
        state.interest -= 1;
        if state.interest > 0 {
            return;
        }
        match state.role {
            // The thread passes the turn on when it gets it.
            Role::Queued => {}
            Role::Leader | Role::Idle => {
                let leaving = give_up_turn(&mut state);
                drop(state);
                drop(leaving);
                forget_if_idle(&self.turns);
            }
        }
    }
}

/// Leaves the queue: the kernel wakes the next process in line. Returns the
/// membership, for the caller to drop (and so maybe remove the queue files)
/// once it has let go of the state's mutex.
#[must_use]
fn give_up_turn(state: &mut State) -> Option<Arc<Membership>> {
    if state.role == Role::Leader
        && let Some(member) = &state.member
    {
        member.pass_turn();
    }
    state.role = Role::Idle;
    state.member.take()
}

/// Drops this process's entry for a lock nobody here waits for any more.
fn forget_if_idle(turns: &Arc<Turns>) {
    let mut queues = queues();
    let state = turns.state();
    if state.interest == 0
        && state.role == Role::Idle
        && !state.thread
        && queues
            .by_queue
            .get(&turns.id)
            .is_some_and(|known| Arc::ptr_eq(known, turns))
    {
        queues.by_queue.remove(&turns.id);
        queues.by_lock.retain(|_, known| !Arc::ptr_eq(known, turns));
    }
}

/// How long a queue thread with nothing to wait for stays, in case this
/// process waits for the lock again.
const THREAD_IDLE: Duration = Duration::from_secs(1);

/// The queue thread of one lock: whenever this process queues, it sleeps in
/// `flock` until this process's turn comes; it ends after [`THREAD_IDLE`]
/// without work.
fn queue_thread(turns: &Arc<Turns>) {
    loop {
        let member = {
            let mut state = turns.state();
            let mut idle_since = Instant::now();
            loop {
                if state.role == Role::Queued {
                    break;
                }
                let idle = idle_since.elapsed();
                if idle >= THREAD_IDLE {
                    state.thread = false;
                    drop(state);
                    forget_if_idle(turns);
                    return;
                }
                let (next, timeout) = turns
                    .work
                    .wait_timeout(state, THREAD_IDLE - idle)
                    .unwrap_or_else(PoisonError::into_inner);
                state = next;
                if !timeout.timed_out() {
                    idle_since = Instant::now();
                }
            }
            state.member.clone()
        };
        let result = match &member {
            Some(member) => member.wait_for_turn(),
            None => Err(Errno::BADF),
        };
        // Let go before anyone hears of the turn (the state keeps the
        // membership): when the waiter's listener goes, the membership must
        // go with it at once, not when this thread next runs, or a process
        // that exits in between leaves the queue files behind.
        drop(member);
        let mut state = turns.state();
        // What the state let go of goes after its mutex.
        let leaving = match result {
            Ok(()) if state.interest > 0 => {
                state.role = Role::Leader;
                drop(state);
                turns.turn_came.notify();
                None
            }
            Ok(()) => {
                // Nobody here waits any more: pass the turn on at once.
                state.role = Role::Leader;
                let leaving = give_up_turn(&mut state);
                drop(state);
                leaving
            }
            Err(error) => {
                // Not expected (the non-blocking attempt worked on this
                // file). Wake the waiters: they look, and watch without the
                // queue.
                tracing::debug!(%error, "the waiter queue's flock failed");
                state.role = Role::Idle;
                let leaving = state.member.take();
                state.broken = true;
                drop(state);
                turns.turn_came.notify();
                leaving
            }
        };
        drop(leaving);
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::time::Duration;

    use super::*;
    use crate::test_support::completes_within;

    // Generous bounds: the events are immediate, the machine may be busy. The
    // quiet periods are short: a wake-up would come within microseconds.
    const SOON: Duration = Duration::from_secs(10);
    const QUIET: Duration = Duration::from_millis(300);

    type Action = Box<dyn FnOnce()>;

    thread_local! {
        /// What a test does at a step of this thread's next join or leave.
        static AT_STEP: RefCell<Vec<(Step, Action)>> = const { RefCell::new(Vec::new()) };
    }

    /// Runs (once) what the test asked for at `at`.
    pub(super) fn at_step(at: Step) {
        let action = AT_STEP.with(|actions| {
            let mut actions = actions.borrow_mut();
            let index = actions.iter().position(|(step, _)| *step == at)?;
            Some(actions.remove(index).1)
        });
        if let Some(action) = action {
            action();
        }
    }

    /// Has `action` run when this thread next reaches `at`.
    fn on_step(at: Step, action: impl FnOnce() + 'static) {
        AT_STEP.with(|actions| actions.borrow_mut().push((at, Box::new(action))));
    }

    /// Whether `member`'s files are the ones at their names.
    fn in_place(member: &Membership) -> bool {
        still_named(&member.dir, &member.waiters_name, &member.waiters) == Ok(true)
            && still_named(&member.dir, &member.turn_name, &member.turn) == Ok(true)
    }

    /// A test's own locks and queue directory: nothing of a test lands in
    /// the real runtime or temporary directory.
    struct Fixture {
        locks: tempfile::TempDir,
        /// The queue directory, given as the runtime directory.
        runtime: tempfile::TempDir,
        home: Home,
    }

    fn fixture() -> Fixture {
        let locks = tempfile::tempdir().unwrap();
        let runtime = tempfile::tempdir().unwrap();
        std::fs::set_permissions(runtime.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let home = Home {
            runtime_dir: Some(runtime.path().to_path_buf()),
            // Never used while the runtime directory is fine; missing, so
            // that using it would fail.
            temp_dir: runtime.path().join("missing-tmp"),
        };
        Fixture {
            locks,
            runtime,
            home,
        }
    }

    impl Fixture {
        /// A held lock named `name`.
        fn held_lock(&self, name: &str) -> PathBuf {
            let lock = self.locks.path().join(name);
            std::fs::write(&lock, "held").unwrap();
            lock
        }

        fn listen(&self, lock: &Path) -> Option<ChangeListener> {
            listen_in(lock, &self.home)
        }

        /// Another process's place in the queue: its own open files.
        fn other_process(&self, lock: &Path) -> Membership {
            join(&self.home, &queue_name(lock).unwrap()).expect("the queue opens")
        }

        /// Whether the queue directory ends up empty (the last membership
        /// may go on the queue thread, just after its waiter's listener).
        fn no_queue_file_left(&self) -> bool {
            empties(self.runtime.path())
        }
    }

    fn entries(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Whether `dir` is (or soon becomes) empty.
    fn empties(dir: &Path) -> bool {
        let deadline = Instant::now() + SOON;
        loop {
            let left = entries(dir);
            if left.is_empty() {
                return true;
            }
            if Instant::now() > deadline {
                eprintln!("left in {}: {left:?}", dir.display());
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn try_take_turn(other: &Membership) -> bool {
        other.try_lead().is_ok()
    }

    /// A held lock named `name`, another process at the head of its queue,
    /// and this process's waiter queued behind it; `None` without inotify.
    fn queued_behind_another(
        fx: &Fixture,
        name: &str,
    ) -> Option<(PathBuf, Membership, ChangeListener)> {
        let lock = fx.held_lock(name);
        let other = fx.other_process(&lock);
        assert!(try_take_turn(&other));
        let Some(follower) = fx.listen(&lock) else {
            eprintln!("inotify unavailable here; skipping");
            return None;
        };
        Some((lock, other, follower))
    }

    #[test]
    fn a_follower_is_not_woken_by_releases_until_its_turn_comes() {
        let fx = fixture();
        let Some((lock, leader, follower)) = queued_behind_another(&fx, "follower.lock") else {
            return;
        };
        std::fs::rename(&lock, fx.locks.path().join("state.lock.releasing.x")).unwrap();
        let (done, wait) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            futures::executor::block_on(follower);
            let _ = done.send(());
        });
        assert!(
            wait.recv_timeout(QUIET).is_err(),
            "a follower was woken by a release"
        );
        leader.pass_turn();
        assert!(wait.recv_timeout(SOON).is_ok(), "the turn never came");

        // Now this process leads: its waiter watches the lock itself.
        let watching = fx.listen(&lock).unwrap();
        assert!(!try_take_turn(&leader), "the turn is this process's");
        std::fs::write(&lock, "held again").unwrap();
        std::fs::rename(&lock, fx.locks.path().join("state.lock.releasing.y")).unwrap();
        assert!(completes_within(watching, SOON));
        // Its last waiter gone, the process gives the turn up.
        assert!(try_take_turn(&leader), "the turn was not given up");
        drop(leader);
        assert!(fx.no_queue_file_left());
    }

    #[test]
    fn a_woken_leader_keeps_its_turn_until_its_listener_is_dropped() {
        let fx = fixture();
        let lock = fx.held_lock("woken.lock");
        let other = fx.other_process(&lock);
        let Some(mut watching) = fx.listen(&lock) else {
            eprintln!("inotify unavailable here; skipping");
            return;
        };
        assert!(!try_take_turn(&other), "this process leads");
        std::fs::rename(&lock, fx.locks.path().join("woken.lock.releasing.x")).unwrap();
        // Driven to completion but kept, as a waiter does while it
        // subscribes again and tries the lock.
        let (done, wait) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            futures::executor::block_on(&mut watching);
            let _ = done.send(watching);
        });
        let watching = wait
            .recv_timeout(SOON)
            .expect("the release woke the leader");
        assert!(
            !try_take_turn(&other),
            "the turn passed on before the waiter stopped listening"
        );
        drop(watching);
        assert!(try_take_turn(&other), "the turn was not given up");
        drop(other);
        assert!(fx.no_queue_file_left());
    }

    #[test]
    fn a_process_that_stopped_waiting_passes_its_turn_on() {
        let fx = fixture();
        let Some((_lock, other, follower)) = queued_behind_another(&fx, "gave-up.lock") else {
            return;
        };
        drop(follower); // gave up while queued
        other.pass_turn();
        // This process's queue thread gets the turn, finds nobody waiting
        // here, and passes it on: the other process gets it back.
        let (done, wait) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let taken = other.wait_for_turn();
            let _ = done.send((taken, other));
        });
        let (taken, other) = wait.recv_timeout(SOON).expect("the turn was kept");
        assert_eq!(taken, Ok(()));
        // This process left the queue with the turn: the other process is
        // its last member, and takes the files with it.
        drop(other);
        assert!(fx.no_queue_file_left());
    }

    #[test]
    fn a_process_that_queues_again_reuses_its_queue_thread() {
        let fx = fixture();
        let lock = fx.held_lock("again.lock");
        let other = fx.other_process(&lock);
        for round in 0..3 {
            assert!(try_take_turn(&other), "round {round}");
            let Some(follower) = fx.listen(&lock) else {
                eprintln!("inotify unavailable here; skipping");
                return;
            };
            other.pass_turn();
            assert!(completes_within(follower, SOON), "round {round}: no turn");
            // The follower's listener is gone: the turn is given up again.
        }
        let turns = queues()
            .by_lock
            .get(&lock)
            .cloned()
            .expect("the entry lives on");
        assert_eq!(turns.state().threads_started, 1, "a thread per wait");
        assert!(
            turns.state().member.is_none(),
            "an idle process keeps no place in the queue"
        );
        drop(turns);
        // Idle for THREAD_IDLE, the thread ends and the entry is forgotten
        // (real time is what is tested: the bound is ten times the period).
        let deadline = Instant::now() + 10 * THREAD_IDLE;
        while queues().by_lock.contains_key(&lock) {
            assert!(Instant::now() < deadline, "the idle thread stayed");
            std::thread::sleep(THREAD_IDLE / 10);
        }
        drop(other);
        assert!(fx.no_queue_file_left());
    }

    #[test]
    fn two_spellings_of_one_lock_share_one_place_in_the_queue() {
        let fx = fixture();
        let Some((lock, other, first)) = queued_behind_another(&fx, "spellings.lock") else {
            return;
        };
        let elsewhere = tempfile::tempdir().unwrap();
        let link = elsewhere.path().join("link");
        std::os::unix::fs::symlink(fx.locks.path(), &link).unwrap();
        let spelled_otherwise = link.join("spellings.lock");
        let second = fx.listen(&spelled_otherwise).expect("inotify works here");
        {
            let queues = queues();
            let (a, b) = (&queues.by_lock[&lock], &queues.by_lock[&spelled_otherwise]);
            assert!(Arc::ptr_eq(a, b), "one process queued twice");
        }
        other.pass_turn();
        assert!(completes_within(first, SOON));
        assert!(completes_within(second, SOON));
        drop(other);
        assert!(fx.no_queue_file_left());
    }

    #[test]
    fn nothing_is_left_once_the_last_waiter_leaves() {
        let fx = fixture();
        let lock = fx.held_lock("last.lock");
        let Some(first) = fx.listen(&lock) else {
            eprintln!("inotify unavailable here; skipping");
            return;
        };
        let second = fx.listen(&lock).unwrap();
        let mut files = entries(fx.runtime.path());
        files.sort();
        let name = queue_name(&lock).unwrap();
        assert_eq!(files, [format!("{name}.turn"), format!("{name}.waiters")]);
        drop(first);
        assert_eq!(entries(fx.runtime.path()).len(), 2, "a waiter is left");
        drop(second);
        assert!(fx.no_queue_file_left());
    }

    #[test]
    fn queue_files_are_private_and_shared_by_the_members() {
        let fx = fixture();
        let lock = fx.held_lock("members.lock");
        let (first, second) = (fx.other_process(&lock), fx.other_process(&lock));
        for (name, file) in [
            (&first.waiters_name, &first.waiters),
            (&first.turn_name, &first.turn),
        ] {
            let meta = std::fs::symlink_metadata(fx.runtime.path().join(name)).unwrap();
            assert!(meta.is_file());
            assert_eq!(meta.mode() & 0o077, 0, "{name} is open to others");
            assert_eq!(meta.uid(), rustix::process::geteuid().as_raw());
            assert_eq!(still_named(&first.dir, name, file), Ok(true));
        }
        let inode = |file: &OwnedFd| rustix::fs::fstat(file).unwrap().st_ino;
        assert_eq!(inode(&first.turn), inode(&second.turn));
        assert_eq!(inode(&first.waiters), inode(&second.waiters));
        // A member that leaves while another stays removes nothing.
        drop(first);
        assert_eq!(entries(fx.runtime.path()).len(), 2);
        drop(second);
        assert!(
            entries(fx.runtime.path()).is_empty(),
            "the last member removes at once"
        );
    }

    #[test]
    fn a_newcomer_that_opened_a_removed_queue_file_starts_over() {
        let fx = fixture();
        let lock = fx.held_lock("newcomer.lock");
        let last = fx.other_process(&lock);
        let runtime = fx.runtime.path().to_path_buf();
        let (left, removed) = std::sync::mpsc::channel();
        // The last member leaves (and removes the files) just after the
        // newcomer opened the waiters file, before it locks it.
        on_step(Step::WaitersOpened, move || {
            drop(last);
            let _ = left.send(entries(&runtime).is_empty());
        });
        let newcomer = fx.other_process(&lock);
        assert_eq!(
            removed.try_recv(),
            Ok(true),
            "the last member removed the files"
        );
        assert!(in_place(&newcomer), "the newcomer joined removed files");
        drop(newcomer);
        assert!(fx.no_queue_file_left());
    }

    #[test]
    fn a_newcomer_never_gets_the_turn_file_being_removed() {
        let fx = fixture();
        let lock = fx.held_lock("between.lock");
        let (home, name) = (fx.home.clone(), queue_name(&lock).unwrap());
        let newcomer = Arc::new(Mutex::new(None));
        let joined = Arc::clone(&newcomer);
        // A newcomer comes while the last member is removing the files.
        on_step(Step::BetweenRemovals, move || {
            *joined.lock().unwrap() = Some(join(&home, &name));
        });
        drop(fx.other_process(&lock));
        let newcomer = newcomer.lock().unwrap().take().expect("the newcomer came");
        match newcomer {
            // It waited for nothing: it watches instead.
            Err(NoQueue::Busy) => {}
            Ok(member) => assert!(in_place(&member), "the newcomer joined removed files"),
            Err(error) => panic!("{error}"),
        }
    }

    #[test]
    fn a_remover_stopped_halfway_stops_no_newcomer() {
        let fx = fixture();
        let lock = fx.held_lock("stopped.lock");
        let remover = fx.other_process(&lock);
        // The last member, stopped right after it took the waiters file
        // for itself.
        rustix::fs::flock(&remover.waiters, FlockOperation::NonBlockingLockExclusive).unwrap();
        let (done, joined) = std::sync::mpsc::channel();
        let home = fx.home.clone();
        let name = queue_name(&lock).unwrap();
        std::thread::spawn(move || {
            let _ = done.send(join(&home, &name).map(|_| ()));
        });
        assert_eq!(joined.recv_timeout(SOON), Ok(Err(NoQueue::Busy)));
        if let Some(watching) = fx.listen(&lock) {
            // Without the queue, the waiter watches the lock itself.
            std::fs::rename(&lock, fx.locks.path().join("stopped.lock.releasing.x")).unwrap();
            assert!(completes_within(watching, SOON));
        }
        drop(remover);
        assert!(fx.no_queue_file_left());
    }

    #[test]
    fn members_that_come_and_go_never_split_the_queue() {
        let fx = fixture();
        let lock = fx.held_lock("churn.lock");
        let name = queue_name(&lock).unwrap();
        let home = fx.home.clone();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (home, name) = (home.clone(), name.clone());
                std::thread::spawn(move || {
                    let mut busy = 0;
                    for _ in 0..300 {
                        // Each thread's memberships are their own open
                        // files, as another process's would be.
                        let member = match join(&home, &name) {
                            Ok(member) => member,
                            Err(NoQueue::Busy) => {
                                busy += 1;
                                continue;
                            }
                            Err(error) => panic!("{error}"),
                        };
                        std::thread::yield_now();
                        for file in [&member.waiters_name, &member.turn_name] {
                            let own = if file == &member.waiters_name {
                                &member.waiters
                            } else {
                                &member.turn
                            };
                            assert_eq!(
                                still_named(&member.dir, file, own),
                                Ok(true),
                                "a member's {file} was removed or replaced"
                            );
                        }
                        if member.try_lead().is_ok() {
                            std::thread::yield_now();
                        }
                    }
                    busy
                })
            })
            .collect();
        let busy: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert!(busy < 4 * 300, "nobody ever joined");
        assert!(entries(fx.runtime.path()).is_empty());
    }

    #[test]
    fn queues_nobody_left_are_swept_by_the_next_last_member() {
        let fx = fixture();
        let dir = fx.runtime.path();
        let touch = |name: &str| std::fs::write(dir.join(name), "").unwrap();
        // Left by processes killed while they waited: a whole queue; the
        // waiters file of one whose remover was killed between its two
        // removals; the turn file of one whose removal of it failed.
        let lone_waiters = "heldlock-1-3-0123456789abcdef.waiters";
        let lone_turn = "heldlock-1-4-0123456789abcdef.turn";
        for left in [
            "heldlock-1-2-0123456789abcdef.waiters",
            "heldlock-1-2-0123456789abcdef.turn",
            lone_waiters,
            lone_turn,
        ] {
            touch(left);
        }
        // Not heldlock's queue files: never touched.
        let others = [
            "heldlock-x.turn",
            "heldlock-1-2-3.waiters",
            "bus",
            "heldlock-1-2-0123456789abcdef.lock",
        ];
        for other in others {
            touch(other);
        }
        // A queue in use.
        let active = fx.other_process(&fx.held_lock("active.lock"));
        let mut expected: Vec<String> = others.iter().map(|other| other.to_string()).collect();
        expected.extend([active.turn_name.clone(), active.waiters_name.clone()]);
        expected.sort();

        // Some queue empties.
        drop(fx.other_process(&fx.held_lock("emptied.lock")));
        let mut left = entries(dir);
        left.sort();
        assert_eq!(left, expected);
        drop(active);
        let mut left = entries(dir);
        left.sort();
        let mut others = others.map(str::to_owned);
        others.sort();
        assert_eq!(left, others);
    }

    #[test]
    fn a_fifo_at_a_queue_file_name_is_refused_not_waited_for() {
        let fx = fixture();
        let lock = fx.locks.path().join("fifo.lock");
        let name = queue_name(&lock).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            fx.runtime.path().join(format!("{name}.waiters")),
            FileType::Fifo,
            Mode::RUSR | Mode::WUSR,
            0,
        )
        .unwrap();
        let (done, joined) = std::sync::mpsc::channel();
        let home = fx.home.clone();
        std::thread::spawn(move || {
            let _ = done.send(join(&home, &name).map(|_| ()));
        });
        // Opening a FIFO for reading would wait for a writer forever.
        assert_eq!(joined.recv_timeout(SOON), Ok(Err(NoQueue::NotAFile)));
    }

    #[test]
    fn every_path_to_a_lock_names_the_same_queue() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("state.lock");
        let through_dot = dir.path().join(".").join("state.lock");
        assert_eq!(queue_name(&lock), queue_name(&through_dot));
        assert_ne!(
            queue_name(&lock),
            queue_name(&dir.path().join("other.lock"))
        );
        assert_eq!(queue_name(&dir.path().join("missing/state.lock")), None);
    }

    /// A home without a runtime directory: a per-user directory in `tmp`.
    fn temp_home(tmp: &Path) -> (Home, PathBuf) {
        let home = Home {
            runtime_dir: None,
            temp_dir: tmp.to_path_buf(),
        };
        let per_user = tmp.join(format!("heldlock-{}", rustix::process::geteuid().as_raw()));
        (home, per_user)
    }

    #[test]
    fn without_a_runtime_directory_a_private_one_is_made_in_the_temporary_one() {
        let tmp = tempfile::tempdir().unwrap();
        let (home, per_user) = temp_home(tmp.path());
        let locks = tempfile::tempdir().unwrap();
        let lock = locks.path().join("tmp.lock");
        std::fs::write(&lock, "held").unwrap();
        let Some(waiting) = listen_in(&lock, &home) else {
            eprintln!("inotify unavailable here; skipping");
            return;
        };
        let meta = std::fs::symlink_metadata(&per_user).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.mode() & 0o7777, 0o700);
        assert_eq!(meta.uid(), rustix::process::geteuid().as_raw());
        assert_eq!(entries(&per_user).len(), 2, "the queue files are in it");
        assert_eq!(entries(tmp.path()).len(), 1, "and nothing else is made");
        drop(waiting);
        // The empty private directory stays (see `Home::open_dir`).
        assert!(empties(&per_user));
    }

    /// Whether `home` uses `dir` for its queue files.
    fn uses(home: &Home, dir: &Path) -> bool {
        let Ok(opened) = home.open_dir() else {
            return false;
        };
        let opened = rustix::fs::fstat(&opened).unwrap();
        std::fs::symlink_metadata(dir)
            .is_ok_and(|meta| (opened.st_dev, opened.st_ino) == (meta.dev(), meta.ino()))
    }

    /// Changes the owner of `path` to `nobody`; false when this process
    /// may not (it does not run as root).
    fn give_away(path: &Path) -> bool {
        match std::os::unix::fs::lchown(path, Some(65534), Some(65534)) {
            Ok(()) => true,
            Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => {
                eprintln!("cannot chown here ({error}); skipping that case");
                false
            }
            Err(error) => panic!("{error}"),
        }
    }

    #[test]
    fn a_runtime_directory_that_is_not_private_is_passed_over() {
        /// Makes the case in a private directory; returns the runtime
        /// directory to give, `None` when the case cannot be made here.
        type Case = fn(&Path) -> Option<PathBuf>;
        let cases: [(&str, Case); 6] = [
            ("usable", |dir| Some(dir.to_path_buf())),
            ("relative", |_| Some(PathBuf::from("relative/runtime"))),
            ("missing", |dir| Some(dir.join("missing"))),
            ("mode 0755", |dir| {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
                Some(dir.to_path_buf())
            }),
            ("a symbolic link", |dir| {
                let link = dir.with_extension("link");
                std::os::unix::fs::symlink(dir, &link).unwrap();
                Some(link)
            }),
            ("another user's", |dir| {
                give_away(dir).then(|| dir.to_path_buf())
            }),
        ];
        for (what, runtime_dir) in cases {
            let outer = tempfile::tempdir().unwrap();
            let runtime = outer.path().join("runtime");
            std::fs::create_dir(&runtime).unwrap();
            std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
            let tmp = outer.path().join("tmp");
            std::fs::create_dir(&tmp).unwrap();
            let Some(runtime_dir) = runtime_dir(&runtime) else {
                continue;
            };
            let (mut home, per_user) = temp_home(&tmp);
            home.runtime_dir = Some(runtime_dir);
            if what == "usable" {
                assert!(uses(&home, &runtime), "{what}");
                assert!(
                    entries(&tmp).is_empty(),
                    "{what}: the temporary one is not made"
                );
            } else {
                assert!(uses(&home, &per_user), "{what}");
            }
        }
    }

    #[test]
    fn a_per_user_directory_that_is_not_private_is_refused_and_everyone_watches() {
        /// Plants something at the per-user directory's name (the first
        /// path), given a private directory (the second); false when the
        /// case cannot be made here.
        type Plant = fn(&Path, &Path) -> bool;
        let cases: [(&str, Plant); 6] = [
            ("mode 0755", |dir, _| {
                std::fs::create_dir(dir).unwrap();
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
                true
            }),
            ("mode 0701", |dir, _| {
                std::fs::create_dir(dir).unwrap();
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o701)).unwrap();
                true
            }),
            ("mode 0770", |dir, _| {
                std::fs::create_dir(dir).unwrap();
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o770)).unwrap();
                true
            }),
            ("a symbolic link to a private directory", |dir, target| {
                std::os::unix::fs::symlink(target, dir).unwrap();
                true
            }),
            ("a regular file", |dir, _| {
                std::fs::write(dir, "").unwrap();
                true
            }),
            ("another user's", |dir, _| {
                std::fs::create_dir(dir).unwrap();
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
                give_away(dir)
            }),
        ];
        for (what, plant) in cases {
            let tmp = tempfile::tempdir().unwrap();
            let (home, per_user) = temp_home(tmp.path());
            let target = tmp.path().join("target");
            std::fs::create_dir(&target).unwrap();
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700)).unwrap();
            if !plant(&per_user, &target) {
                continue;
            }
            assert!(home.open_dir().is_err(), "{what}");
            let locks = tempfile::tempdir().unwrap();
            let lock = locks.path().join("refused.lock");
            std::fs::write(&lock, "held").unwrap();
            let name = queue_name(&lock).unwrap();
            assert!(join(&home, &name).is_err(), "{what}");
            let Some(watching) = listen_in(&lock, &home) else {
                eprintln!("inotify unavailable here; skipping");
                return;
            };
            // No queue: this waiter watches the lock itself, and is woken
            // by the release.
            std::fs::rename(&lock, locks.path().join("refused.lock.releasing.x")).unwrap();
            assert!(completes_within(watching, SOON), "{what}");
            assert!(
                entries(&target).is_empty(),
                "{what}: files in the link's target"
            );
            if std::fs::symlink_metadata(&per_user).unwrap().is_dir() {
                assert!(
                    entries(&per_user).is_empty(),
                    "{what}: files in the refused directory"
                );
            }
        }
    }

    /// Whether the user `nobody` can open `path` for reading, as it would
    /// to `flock` it.
    fn nobody_opens(path: &Path) -> bool {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("sh")
            .arg("-c")
            .arg(r#"exec 3< "$0""#)
            .arg(path)
            .current_dir("/")
            .uid(65534)
            .gid(65534)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    #[test]
    fn another_user_cannot_open_the_queue_files() {
        if rustix::process::geteuid().as_raw() != 0 {
            eprintln!("not root: cannot run a process as another user; skipping");
            return;
        }
        let fx = fixture();
        // The check itself works: `nobody` opens a file it may read.
        let open = tempfile::tempdir().unwrap();
        std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let readable = open.path().join("readable");
        std::fs::write(&readable, "").unwrap();
        std::fs::set_permissions(&readable, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(nobody_opens(&readable), "the probe cannot open anything");

        let lock = fx.held_lock("private.lock");
        let member = fx.other_process(&lock);
        for name in [&member.turn_name, &member.waiters_name] {
            assert!(
                !nobody_opens(&fx.runtime.path().join(name)),
                "another user opened {name}"
            );
        }
    }
}
