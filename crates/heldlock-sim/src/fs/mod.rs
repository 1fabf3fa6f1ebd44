//! [`SimFs`]: an in-memory POSIX file system implementing
//! [`heldlock_fs::Vfs`], in which every operation is a scheduling point.
//!
//! Each operation first yields to the scheduler, then happens atomically
//! against the world's file tree (inodes with link counts and birth times,
//! directory entries, `O_EXCL` create, atomic `rename`, `link` that never
//! replaces, descriptors that outlive unlinks). The fault plan may make any
//! operation of a contender fail with `EIO`, `ENOSPC` or `EACCES` instead.

pub(crate) mod errno;
pub(crate) mod tree;

use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use heldlock_fs::{Meta, Vfs, VfsFile};

pub use errno::Errno;
pub use tree::Actor;

use crate::world::{State, World};

/// The file-system operations, for fault statistics and traces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum OpKind {
    /// `mkdir -p`.
    CreateDirAll,
    /// `open(O_CREAT | O_EXCL)`.
    CreateNew,
    /// `open(O_RDONLY | O_NOFOLLOW)`.
    OpenRead,
    /// `lstat`.
    Lstat,
    /// `rename`.
    Rename,
    /// `link`.
    Link,
    /// `unlink`.
    Unlink,
    /// `pwrite` through a descriptor.
    Write,
    /// `pread` through a descriptor.
    Read,
    /// `fstat`.
    Fstat,
    /// `futimens`.
    SetMtime,
    /// `fsync`.
    Sync,
    /// `readdir` of a whole directory.
    ListDir,
    /// `renameat2(RENAME_EXCHANGE)`.
    Exchange,
    /// `flock`.
    Flock,
}

impl OpKind {
    /// Every operation, in order.
    pub const ALL: [OpKind; 15] = [
        OpKind::CreateDirAll,
        OpKind::CreateNew,
        OpKind::OpenRead,
        OpKind::Lstat,
        OpKind::Rename,
        OpKind::Link,
        OpKind::Unlink,
        OpKind::Write,
        OpKind::Read,
        OpKind::Fstat,
        OpKind::SetMtime,
        OpKind::Sync,
        OpKind::ListDir,
        OpKind::Exchange,
        OpKind::Flock,
    ];

    /// The system call's name.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::CreateDirAll => "mkdir_p",
            OpKind::CreateNew => "create_new",
            OpKind::OpenRead => "open_read",
            OpKind::Lstat => "lstat",
            OpKind::Rename => "rename",
            OpKind::Link => "link",
            OpKind::Unlink => "unlink",
            OpKind::Write => "write",
            OpKind::Read => "read",
            OpKind::Fstat => "fstat",
            OpKind::SetMtime => "futimens",
            OpKind::Sync => "fsync",
            OpKind::ListDir => "readdir",
            OpKind::Exchange => "exchange",
            OpKind::Flock => "flock",
        }
    }
}

/// The simulated file system of one world; cheap to clone (every clone is
/// the same file system). See the [module docs](self).
#[derive(Clone)]
pub struct SimFs {
    world: Arc<World>,
}

impl SimFs {
    pub(crate) fn new(world: Arc<World>) -> Self {
        SimFs { world }
    }
}

impl fmt::Debug for SimFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SimFs")
    }
}

/// An open descriptor of [`SimFs`]: it names its inode whatever happens to
/// the path it was opened by. Closing it (dropping it) lets go of the
/// `flock` taken through it.
pub struct SimFile {
    world: Arc<World>,
    ino: u64,
    /// Whether it is still open, for the `flock` taken through it (a drop
    /// may happen with the world locked, so it only clears this flag).
    open: Arc<AtomicBool>,
}

impl SimFile {
    fn opened(world: Arc<World>, ino: u64) -> Self {
        SimFile {
            world,
            ino,
            open: Arc::new(AtomicBool::new(true)),
        }
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        self.open.store(false, Ordering::Relaxed);
    }
}

impl SimFile {
    /// The inode number this descriptor names.
    pub fn ino(&self) -> u64 {
        self.ino
    }
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile").field("ino", &self.ino).finish()
    }
}

/// One operation: a scheduling point, then (unless a fault is injected) `f`
/// under the world's lock.
async fn op<T>(
    world: &World,
    kind: OpKind,
    f: impl FnOnce(&mut State) -> Result<T, Errno> + Send,
) -> io::Result<T> {
    world.yield_now().await;
    let mut state = world.lock();
    if let Some(errno) = state.inject(kind) {
        return Err(errno.to_io());
    }
    f(&mut state).map_err(Errno::to_io)
}

fn shown<T>(result: &Result<T, Errno>, ok: impl FnOnce(&T) -> String) -> String {
    match result {
        Ok(value) => ok(value),
        Err(errno) => errno.to_string(),
    }
}

impl Vfs for SimFs {
    type File = SimFile;

    fn wall_clock(&self) -> SystemTime {
        let st = self.world.lock();
        let contender = match st.actor() {
            Actor::Contender(c) => Some(c),
            Actor::Intruder | Actor::Setup => None,
        };
        st.wall(contender)
    }

    fn monotonic(&self) -> std::time::Instant {
        self.world.lock().instant()
    }

    fn create_dir_all(&self, path: &Path) -> impl Future<Output = io::Result<()>> + Send {
        op(&self.world, OpKind::CreateDirAll, move |st| {
            let (now, actor) = (st.true_wall(), st.actor());
            let result = st.tree.create_dir_all(path, now, actor);
            if st.trace.enabled() {
                let p = st.trace_path(path);
                let r = shown(&result, |()| "ok".into());
                st.note(&format!("mkdir -p {p} = {r}"));
            }
            result
        })
    }

    fn create_new(&self, path: &Path) -> impl Future<Output = io::Result<SimFile>> + Send {
        let world = Arc::clone(&self.world);
        op(&self.world, OpKind::CreateNew, move |st| {
            let (now, actor) = (st.true_wall(), st.actor());
            let result = st.tree.create_new(path, now, actor);
            st.seen_create(path, &result);
            if st.trace.enabled() {
                let p = st.trace_path(path);
                let r = shown(&result, |ino| format!("ino {ino}"));
                st.note(&format!("create_new({p}) = {r}"));
            }
            result.map(|ino| SimFile::opened(world, ino))
        })
    }

    fn open_read(&self, path: &Path) -> impl Future<Output = io::Result<SimFile>> + Send {
        let world = Arc::clone(&self.world);
        op(&self.world, OpKind::OpenRead, move |st| {
            let actor = st.actor();
            let result = st.tree.open(path).and_then(|ino| {
                if st.can_read(ino, actor) {
                    Ok(ino)
                } else {
                    Err(Errno::EACCES)
                }
            });
            st.seen_lookup(path, &result);
            if st.trace.enabled() {
                let p = st.trace_path(path);
                let r = shown(&result, |ino| st.describe(*ino));
                st.note(&format!("open_read({p}) = {r}"));
            }
            result.map(|ino| SimFile::opened(world, ino))
        })
    }

    fn lstat(&self, path: &Path) -> impl Future<Output = io::Result<Meta>> + Send {
        op(&self.world, OpKind::Lstat, move |st| {
            let ino = st.tree.lookup(path);
            st.seen_lookup(path, &ino);
            if st.trace.enabled() {
                let p = st.trace_path(path);
                let r = shown(&ino, |ino| st.describe(*ino));
                st.note(&format!("lstat({p}) = {r}"));
            }
            let dev = st.dev_seen_by(st.actor());
            ino.and_then(|ino| st.tree.meta(ino))
                .map(|meta| Meta { dev, ..meta })
        })
    }

    fn rename(&self, from: &Path, to: &Path) -> impl Future<Output = io::Result<()>> + Send {
        op(&self.world, OpKind::Rename, move |st| {
            let result = st.tree.rename(from, to);
            if st.trace.enabled() {
                let (f, t) = (st.trace_path(from), st.trace_path(to));
                let r = shown(&result, |(moved, replaced)| match replaced {
                    None => format!("ok, moved {}", st.describe(*moved)),
                    Some(old) => format!(
                        "ok, moved {}, REPLACED {}",
                        st.describe(*moved),
                        st.describe(*old)
                    ),
                });
                st.note(&format!("rename({f} -> {t}) = {r}"));
            }
            st.seen_rename(from, to, &result);
            result.map(|_| ())
        })
    }

    fn link(&self, from: &Path, to: &Path) -> impl Future<Output = io::Result<()>> + Send {
        op(&self.world, OpKind::Link, move |st| {
            let source = st.tree.lookup(from).ok();
            let result = st.tree.link(from, to);
            if st.trace.enabled() {
                let (f, t) = (st.trace_path(from), st.trace_path(to));
                let r = shown(&result, |ino| format!("ok, {}", st.describe(*ino)));
                st.note(&format!("link({f} -> {t}) = {r}"));
            }
            st.seen_link(source, to, &result);
            result.map(|_| ())
        })
    }

    fn unlink(&self, path: &Path) -> impl Future<Output = io::Result<()>> + Send {
        op(&self.world, OpKind::Unlink, move |st| {
            let result = st.tree.unlink(path);
            if st.trace.enabled() {
                let p = st.trace_path(path);
                let r = shown(&result, |ino| format!("ok, {}", st.describe(*ino)));
                st.note(&format!("unlink({p}) = {r}"));
            }
            st.seen_unlink(path, &result);
            result.map(|_| ())
        })
    }

    fn exchange(&self, a: &Path, b: &Path) -> impl Future<Output = io::Result<()>> + Send {
        op(&self.world, OpKind::Exchange, move |st| {
            let result = st.tree.exchange(a, b);
            if st.trace.enabled() {
                let (pa, pb) = (st.trace_path(a), st.trace_path(b));
                let r = shown(&result, |(at_a, at_b)| {
                    format!("ok, ino {at_a} and ino {at_b}")
                });
                st.note(&format!("exchange({pa} <-> {pb}) = {r}"));
            }
            st.seen_exchange(a, b, &result);
            if result.is_ok() {
                st.obs.bump("marker.exchange");
            }
            result.map(|_| ())
        })
    }

    fn list_dir(&self, dir: &Path) -> impl Future<Output = io::Result<Vec<OsString>>> + Send {
        op(&self.world, OpKind::ListDir, move |st| {
            let ino = st.tree.lookup(dir)?;
            st.tree.meta(ino)?;
            let names: Vec<OsString> = st.tree.list(dir).into_iter().map(|(n, _)| n).collect();
            st.obs.bump("sweep.readdir");
            if st.trace.enabled() {
                let p = st.trace_path(dir);
                st.note(&format!("readdir({p}) = {} names", names.len()));
            }
            Ok(names)
        })
    }
}

impl VfsFile for SimFile {
    fn write_all(&self, bytes: &[u8]) -> impl Future<Output = io::Result<()>> + Send {
        let ino = self.ino;
        op(&self.world, OpKind::Write, move |st| {
            let now = st.true_wall();
            let result = st.tree.write(ino, bytes, now);
            if st.trace.enabled() {
                let r = shown(&result, |()| "ok".into());
                st.note(&format!(
                    "write(ino {ino}, a {}-byte record) = {r}",
                    bytes.len()
                ));
            }
            result
        })
    }

    fn read_capped(&self, max: usize) -> impl Future<Output = io::Result<Vec<u8>>> + Send {
        let ino = self.ino;
        op(&self.world, OpKind::Read, move |st| {
            let result = st.tree.read(ino, max);
            if st.trace.enabled() {
                let r = shown(&result, |data| format!("{} bytes", data.len()));
                st.note(&format!("read(ino {ino}) = {r}"));
            }
            result
        })
    }

    fn fstat(&self) -> impl Future<Output = io::Result<Meta>> + Send {
        let ino = self.ino;
        op(&self.world, OpKind::Fstat, move |st| {
            let dev = st.dev_seen_by(st.actor());
            let result = st.tree.meta(ino).map(|meta| Meta { dev, ..meta });
            if st.trace.enabled() {
                let r = shown(&result, |m| st.show_mtime(m.mtime));
                st.note(&format!("fstat(ino {ino}) = mtime {r}"));
            }
            result
        })
    }

    fn set_mtime(&self, mtime: SystemTime) -> impl Future<Output = io::Result<()>> + Send {
        let ino = self.ino;
        op(&self.world, OpKind::SetMtime, move |st| {
            let result = st.tree.set_mtime(ino, mtime);
            if st.trace.enabled() {
                let r = shown(&result, |()| "ok".into());
                let shown = st.show_mtime(mtime);
                st.note(&format!("futimens(ino {ino}, {shown}) = {r}"));
            }
            result
        })
    }

    fn sync(&self) -> impl Future<Output = io::Result<()>> + Send {
        let ino = self.ino;
        op(&self.world, OpKind::Sync, move |st| {
            let result = st.tree.meta(ino).map(|_| ());
            st.note(&format!("fsync(ino {ino})"));
            result
        })
    }

    fn lock_exclusive(&self) -> impl Future<Output = io::Result<bool>> + Send {
        let (ino, open) = (self.ino, Arc::clone(&self.open));
        op(&self.world, OpKind::Flock, move |st| {
            let Actor::Contender(c) = st.actor() else {
                return Ok(false);
            };
            let taken = st.flock(ino, &open, c);
            if st.trace.enabled() {
                st.note(&format!("flock(ino {ino}, LOCK_EX | LOCK_NB) = {taken}"));
            }
            Ok(taken)
        })
    }

    fn unlock(&self) -> io::Result<()> {
        let mut st = self.world.lock();
        st.funlock(&self.open);
        if st.trace.enabled() {
            let ino = self.ino;
            st.note(&format!("flock(ino {ino}, LOCK_UN)"));
        }
        Ok(())
    }

    fn kernel_held(&self) -> impl Future<Output = io::Result<bool>> + Send {
        let (ino, open) = (self.ino, Arc::clone(&self.open));
        op(&self.world, OpKind::Flock, move |st| {
            let host = st.host_of_actor(st.actor());
            let held = st.flock_held(ino, host, Some(&open));
            if held {
                st.obs.bump("flock.held");
            }
            if st.trace.enabled() {
                st.note(&format!(
                    "flock(ino {ino}, LOCK_SH | LOCK_NB) finds it held: {held}"
                ));
            }
            Ok(held)
        })
    }
}

impl State {
    /// Draws whether this contender operation fails, and with which errno.
    fn inject(&mut self, kind: OpKind) -> Option<Errno> {
        let Actor::Contender(_) = self.actor() else {
            return None;
        };
        if self.io_ppm == 0 {
            return None;
        }
        if self.io_heartbeat_only && !self.current.is_some_and(|c| self.obs.is_heartbeat(c.task)) {
            return None;
        }
        let fail = self.decisions.chance(self.io_ppm);
        let which = self.decisions.below(Errno::INJECTED.len() as u64);
        if !fail {
            return None;
        }
        let errno = Errno::INJECTED[usize::try_from(which).unwrap_or(0) % Errno::INJECTED.len()];
        let now = self.now;
        self.obs.note_io_fault(kind, errno, now);
        self.note(&format!("FAULT {} fails with {errno}", kind.name()));
        Some(errno)
    }

    /// The wall time `t` as seconds since the start of the run (negative:
    /// before it), for traces.
    pub(crate) fn show_mtime(&self, t: SystemTime) -> String {
        let start = std::time::UNIX_EPOCH + crate::world::WALL_START;
        match t.duration_since(start) {
            Ok(after) => format!("{:.3}s", after.as_secs_f64()),
            Err(before) => format!("-{:.3}s", before.duration().as_secs_f64()),
        }
    }
}
