//! The queue's files: the private directory they live in, joining and
//! leaving a queue, and the removal of queues nobody is in any more.

use std::fmt;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::throttle::Throttle;
use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags};
use rustix::io::Errno;

/// Where this user's queue files go: `$XDG_RUNTIME_DIR` when it is set and
/// private, else `$TMPDIR/heldlock-<euid>`, made on first use with mode
/// 0700. Taken from the environment whenever this process starts to wait
/// for a lock it does not wait for yet; tests give their own.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Home {
    pub(super) runtime_dir: Option<PathBuf>,
    pub(super) temp_dir: PathBuf,
}

impl Home {
    pub(super) fn from_env() -> Self {
        Home {
            runtime_dir: std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
            temp_dir: std::env::temp_dir(),
        }
    }

    /// The directory of the queue files, opened and found private.
    pub(super) fn open_dir(&self) -> Result<OwnedFd, NoQueue> {
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

    /// The path of the directory [`open_dir`](Self::open_dir) would open,
    /// found without making anything: for a look at one of its files by
    /// name (a starving mark), where a wrong answer costs a wait of at most
    /// a poll. `None` when no directory there is private.
    pub(super) fn dir_path(&self) -> Option<PathBuf> {
        if let Some(runtime) = self.runtime_dir.as_deref().filter(|dir| dir.is_absolute())
            && open_private_dir(runtime).is_ok()
        {
            return Some(runtime.to_path_buf());
        }
        let per_user = self
            .temp_dir
            .join(format!("heldlock-{}", rustix::process::geteuid().as_raw()));
        open_private_dir(&per_user).is_ok().then_some(per_user)
    }
}

/// Opens the directory at `path` if it is private: a real directory (a
/// symbolic link is not followed), owned by this user, with no permission
/// for its group or others. It is checked through the descriptor and used
/// only through it (the queue files are opened relative to it), so the
/// directory checked is the one used, whatever becomes of the path.
pub(super) fn open_private_dir(path: &Path) -> Result<OwnedFd, NoQueue> {
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
pub(super) enum NoQueue {
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
/// after the lock's directory by device, inode number and birth time (every
/// path to it agrees) and a stable hash of the lock's file name. The queue
/// directory is not the lock's, so that the lock's directory holds nothing
/// but locks, and so that the queue stays on this host even when the lock is
/// on a network file system. `None` when the lock's directory cannot be
/// found.
///
/// The birth time is there because an inode number names a directory only
/// while it exists: a file system hands a removed directory's number to the
/// next directory made (ext4 at once: of 200 temporary directories made and
/// removed in turn, 199 got the first one's number). Named by device and
/// inode alone, the locks of a new directory shared the queue of a removed
/// one, and a process still in that queue (stopped, slow to see the
/// removal, or waiting on a directory made again at the same path, whose
/// queue it keeps) held their turn: their waiters, followers that do not
/// watch, slept through every release until their poll. Where the file
/// system reports no birth time (NFS, some FUSE file systems), or `statx` is
/// missing, the name has device and inode alone.
pub(super) fn queue_name(lock: &Path) -> Option<String> {
    let name = lock.file_name()?;
    let dir = match lock.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let (dev, ino, born) = dir_identity(dir)?;
    Some(name_of(dev, ino, born, name.as_bytes()))
}

/// A birth time: seconds since the epoch and nanoseconds.
pub(super) type Born = (i64, u32);

/// The device, inode number and, where the file system reports it, birth
/// time of the directory at `dir`, a symbolic link followed as in any path
/// to the lock.
fn dir_identity(dir: &Path) -> Option<(u64, u64, Option<Born>)> {
    let wanted = rustix::fs::StatxFlags::INO | rustix::fs::StatxFlags::BTIME;
    match rustix::fs::statx(rustix::fs::CWD, dir, AtFlags::empty(), wanted) {
        Ok(stat) => {
            let born = (stat.stx_mask & rustix::fs::StatxFlags::BTIME.bits() != 0)
                .then_some((stat.stx_btime.tv_sec, stat.stx_btime.tv_nsec));
            // Encoded as `stat`'s `st_dev`, which names queues where
            // `statx` is missing.
            let dev = rustix::fs::makedev(stat.stx_dev_major, stat.stx_dev_minor);
            Some((dev, stat.stx_ino, born))
        }
        // Linux before 4.11, or a sandbox that refuses `statx` (a missing
        // directory fails this too).
        Err(_) => {
            let stat = rustix::fs::stat(dir).ok()?;
            Some((stat.st_dev, stat.st_ino, None))
        }
    }
}

/// A queue's name from its lock's directory (device, inode number, birth
/// time if known) and file name: `heldlock-<dev>-<ino>[-<born>]-<hash>`, all
/// hexadecimal, `<born>` the seconds and then the nanoseconds in eight
/// digits (below 10^9, so the two never run together).
pub(super) fn name_of(dev: u64, ino: u64, born: Option<Born>, lock_name: &[u8]) -> String {
    let hash = crate::record::stable_hash(crate::record::FNV_OFFSET_BASIS, lock_name);
    match born {
        Some((secs, nanos)) => format!("heldlock-{dev:x}-{ino:x}-{secs:x}{nanos:08x}-{hash:016x}"),
        None => format!("heldlock-{dev:x}-{ino:x}-{hash:016x}"),
    }
}

/// How many times [`join`] starts over after finding the queue files
/// removed, or being removed, under it.
pub(super) const JOIN_ATTEMPTS: u32 = 8;

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
/// One exception, by design: a process whose waiters all stopped while it
/// was still in line stops counting as a member at once
/// ([`Membership::stop_counting`]) but stays in line until its queue thread
/// gets the turn and passes it on. Counted until then, it would keep the
/// other members' last leaver from removing the files, and might exit
/// (its lock taken and released meanwhile) before its thread removed them
/// itself. Should the files be removed meanwhile, the turn it gets is a
/// removed file's: it passes it on at once, or, if a waiter of it came back
/// meanwhile (counting again, but on the removed file), leads a queue of
/// its own until that waiter stops: one more watcher of the lock, nothing
/// worse. It never touches the new queue's starving mark
/// ([`Membership::unmark_starving`]).
///
/// The shared lock is not waited for: a remover holds the file only for a
/// few system calls, but a remover stopped there would stop every newcomer
/// with it. A newcomer that keeps finding it held gives up and watches.
#[derive(Debug)]
pub(super) struct Membership {
    /// The private queue directory; every name below is relative to it.
    pub(super) dir: OwnedFd,
    pub(super) waiters_name: String,
    pub(super) turn_name: String,
    /// The mark of a leader that waited past its bound (bounded waiting):
    /// made and removed by the leader only (see [`starving_name`]).
    pub(super) starving_name: String,
    /// Held with a shared `flock` while this membership lives.
    pub(super) waiters: OwnedFd,
    /// Its exclusive `flock` is the turn.
    pub(super) turn: OwnedFd,
    /// The process that joined. A child forked without `exec` shares the
    /// open file descriptions, hence the locks, and must leave them alone:
    /// unlocking there would take its parent's turn or place away.
    pub(super) pid: u32,
}

/// Moments in joining and leaving at which another process may act: a test
/// acts there, deterministically, as that process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// A newcomer opened the waiters file and has not locked it yet.
    WaitersOpened,
    /// The last member removed the turn file, not yet the waiters file.
    BetweenRemovals,
}

#[cfg(not(test))]
pub(super) fn step(_: Step) {}

#[cfg(test)]
pub(super) fn step(at: Step) {
    super::tests::at_step(at);
}

/// Joins the queue named `name` in `home`'s queue directory.
pub(super) fn join(home: &Home, name: &str) -> Result<Membership, NoQueue> {
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
            starving_name: starving_name(name),
            waiters,
            turn,
            pid: std::process::id(),
        });
    }
    Err(NoQueue::Busy)
}

impl Membership {
    /// Takes the turn if nobody has it.
    pub(super) fn try_lead(&self) -> rustix::io::Result<()> {
        rustix::fs::flock(&self.turn, FlockOperation::NonBlockingLockExclusive)
    }

    /// Sleeps until the turn comes.
    pub(super) fn wait_for_turn(&self) -> rustix::io::Result<()> {
        loop {
            match rustix::fs::flock(&self.turn, FlockOperation::LockExclusive) {
                Err(Errno::INTR) => continue,
                other => return other,
            }
        }
    }

    /// Gives the turn up, if this member has it: the kernel wakes the next
    /// member in line.
    pub(super) fn pass_turn(&self) {
        if self.pid == std::process::id() {
            // Closing the file would release the turn too; unlocking says
            // so, and does not wait for the last clone of the membership.
            let _ = rustix::fs::flock(&self.turn, FlockOperation::Unlock);
        }
    }

    /// Leaves the starving mark: the leader (the caller) has watched past
    /// its bound. An empty file, made or found; only its name says anything.
    ///
    /// Refused (`ESTALE`) unless this membership is the current queue's and
    /// this process's (see [`is_current`](Self::is_current)).
    pub(super) fn mark_starving(&self) -> rustix::io::Result<()> {
        if !self.is_current() {
            return Err(Errno::STALE);
        }
        let flags = OFlags::WRONLY
            | OFlags::CREATE
            | OFlags::CLOEXEC
            | OFlags::NOFOLLOW
            | OFlags::NONBLOCK
            | OFlags::NOCTTY;
        rustix::fs::openat(
            &self.dir,
            &self.starving_name,
            flags,
            Mode::RUSR | Mode::WUSR,
        )
        .map(drop)
    }

    /// Removes the starving mark, whoever made it: called by the leader as
    /// it gives up the turn, so that a mark left by a leader that died
    /// lasts one leader at most. Only while this membership is current:
    /// the mark at the name is then this queue's.
    pub(super) fn unmark_starving(&self) {
        if self.is_current() {
            let _ = rustix::fs::unlinkat(&self.dir, &self.starving_name, AtFlags::empty());
        }
    }

    /// Whether this process joined (a child forked without `exec` did not,
    /// and must leave its parent's mark alone) and this membership's
    /// waiters file is still the one at its name. A member that stopped
    /// counting may be in line on files since removed, and then the mark at
    /// the name is the new queue's, whose leader it is not.
    fn is_current(&self) -> bool {
        self.pid == std::process::id()
            && still_named(&self.dir, &self.waiters_name, &self.waiters) == Ok(true)
    }

    /// Stops counting as a member, but stays in line for the turn: called
    /// when this process's waiters all stopped while it was queued (one
    /// took the lock on its own poll), since the process may then exit
    /// before its queue thread gets the turn and leaves (see the type's
    /// docs). The last member removes the files here and now. Whether it
    /// removed them.
    pub(super) fn stop_counting(&self) -> bool {
        self.pid == std::process::id() && self.leave_waiters()
    }

    /// Counts as a member again after [`stop_counting`](Self::stop_counting),
    /// for a waiter of this process that queues again before the turn came.
    /// Not waited for, like a newcomer's lock: held by a remover, the file
    /// is on its way out, and this process stays in line uncounted.
    pub(super) fn count_again(&self) {
        if self.pid == std::process::id() {
            let _ = rustix::fs::flock(&self.waiters, FlockOperation::NonBlockingLockShared);
        }
    }

    /// Trades this member's shared lock on the waiters file for an
    /// exclusive one, granted only when no other member exists, and then
    /// removes the queue's files. Afterwards this member holds no lock on
    /// the file either way. Whether it removed them.
    fn leave_waiters(&self) -> bool {
        if rustix::fs::flock(&self.waiters, FlockOperation::NonBlockingLockExclusive).is_err() {
            // A failed trade has lost the shared lock already (`flock(2)`:
            // a conversion removes the old lock first); said once more for
            // a system that would keep it.
            let _ = rustix::fs::flock(&self.waiters, FlockOperation::Unlock);
            return false;
        }
        let removed = remove_queue(
            &self.dir,
            &self.waiters_name,
            &self.turn_name,
            &self.waiters,
        );
        // Newcomers that opened the removed file start over now, not when
        // this membership ends.
        let _ = rustix::fs::flock(&self.waiters, FlockOperation::Unlock);
        removed
    }
}

/// The name of the starving mark of the queue named `name`: there while the
/// queue's leader has waited past its bound, for the acquirers of this host
/// to wait behind it (bounded waiting; see the queue's module docs).
pub(super) fn starving_name(name: &str) -> String {
    format!("{name}.starving")
}

impl Drop for Membership {
    fn drop(&mut self) {
        if self.pid != std::process::id() {
            return;
        }
        self.pass_turn();
        if self.leave_waiters() && sweep_due(&self.dir) {
            sweep_abandoned(&self.dir);
        }
    }
}

/// Removes a queue's files, given its waiters file `waiters` held
/// exclusively (see [`Membership`]); whether it did.
pub(super) fn remove_queue(
    dir: &OwnedFd,
    waiters_name: &str,
    turn_name: &str,
    waiters: &OwnedFd,
) -> bool {
    // Only a process of this user that is not heldlock could have moved the
    // name meanwhile; then whatever it names is not this queue's.
    if still_named(dir, waiters_name, waiters) != Ok(true) {
        return false;
    }
    // The turn file first (see `Membership`). Should a removal fail, the
    // file stays at its name and whoever comes next uses it.
    // A leader's starving mark goes with the queue: one left by a leader
    // that died must not outlive the queue. It takes no part in joining.
    if let Some(name) = waiters_name.strip_suffix(".waiters") {
        let _ = rustix::fs::unlinkat(dir, starving_name(name), AtFlags::empty());
    }
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
pub(super) const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether this process is due to sweep the queue directory `dir`: the
/// first time one of its queues there empties, then at most once per
/// [`SWEEP_EVERY`].
pub(super) fn sweep_due(dir: &OwnedFd) -> bool {
    static SWEPT: Throttle<DirKey> = Throttle::new();
    dir_key(dir).is_some_and(|key| SWEPT.due(key, SWEEP_EVERY, false))
}

/// One directory, while it exists and after: device, inode and birth time
/// (an inode number alone is handed to the next directory made).
pub(super) type DirKey = (u64, u64, i64, u32);

pub(super) fn dir_key(dir: &OwnedFd) -> Option<DirKey> {
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
pub(super) fn sweep_abandoned(dir: &OwnedFd) {
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
                .or_else(|| file.strip_suffix(".turn"))
                .or_else(|| file.strip_suffix(".starving"))?;
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
pub(super) fn is_queue_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("heldlock-") else {
        return false;
    };
    let parts: Vec<&str> = rest.split('-').collect();
    let hex = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_hexdigit());
    let hash = |part: &str| part.len() == 16 && hex(part);
    // Without a birth time too: a directory's that reports none, or one
    // left by an older heldlock.
    match parts.as_slice() {
        [dev, ino, name] => hex(dev) && hex(ino) && hash(name),
        [dev, ino, born, name] => hex(dev) && hex(ino) && hex(born) && hash(name),
        _ => false,
    }
}

/// Opens (creating it if missing) the queue file `name` in `dir`.
pub(super) fn open_queue_file(dir: &OwnedFd, name: &str) -> Result<OwnedFd, NoQueue> {
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
pub(super) fn still_named(dir: &OwnedFd, name: &str, file: &OwnedFd) -> Result<bool, NoQueue> {
    let held = rustix::fs::fstat(file).map_err(NoQueue::Io)?;
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(found) => Ok((found.st_dev, found.st_ino) == (held.st_dev, held.st_ino)),
        Err(Errno::NOENT) => Ok(false),
        Err(error) => Err(NoQueue::Io(error)),
    }
}
