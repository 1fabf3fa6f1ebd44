//! A fault-injecting, recording `Vfs` over the real file system, written
//! against the public `Vfs` / `VfsFile` traits only, and helpers to build a
//! full `heldlock_core::Lock` on it.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use heldlock_core::{Lock, LockOptions, Runtime};
use heldlock_fs::{FsBackend, Meta, RealFile, RealFs, Vfs, VfsFile};
use rustix::io::Errno;

/// One file-system operation of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    CreateDirAll,
    Create,
    OpenRead,
    Lstat,
    Rename,
    Link,
    Unlink,
    Write,
    Read,
    Fstat,
    SetMtime,
    Sync,
}

impl Op {
    pub const ALL: [Op; 12] = [
        Op::CreateDirAll,
        Op::Create,
        Op::OpenRead,
        Op::Lstat,
        Op::Rename,
        Op::Link,
        Op::Unlink,
        Op::Write,
        Op::Read,
        Op::Fstat,
        Op::SetMtime,
        Op::Sync,
    ];
}

/// The errors injected by the fault tests.
pub const ERRNOS: [Errno; 4] = [Errno::IO, Errno::NOSPC, Errno::ACCESS, Errno::ROFS];

pub fn errno_name(errno: Errno) -> &'static str {
    match errno {
        Errno::IO => "EIO",
        Errno::NOSPC => "ENOSPC",
        Errno::ACCESS => "EACCES",
        Errno::ROFS => "EROFS",
        _ => "another errno",
    }
}

type Action = Box<dyn FnOnce(&Path) + Send>;

struct Fault {
    op: Op,
    errno: Errno,
    /// Calls of `op` to let through before failing.
    skip: usize,
    /// How many calls to fail; `None`: every call from then on.
    times: Option<usize>,
}

struct Hook {
    op: Op,
    skip: usize,
    action: Action,
}

#[derive(Default)]
struct Plan {
    faults: Vec<Fault>,
    hooks: Vec<Hook>,
    log: Vec<(Op, PathBuf)>,
    /// (cap asked for, bytes returned) of every `read_capped`.
    reads: Vec<(usize, usize)>,
    /// (dev, ino) of every file opened.
    opened: Vec<(u64, u64)>,
    injected: usize,
}

/// The real file system, with faults and hooks on chosen calls, and a log of
/// every call. Its futures complete on their first poll, as `RealFs`'s do.
#[derive(Clone, Default)]
pub struct FaultVfs {
    plan: Arc<Mutex<Plan>>,
}

impl fmt::Debug for FaultVfs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FaultVfs")
    }
}

impl FaultVfs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Fails the `nth` (1-based) next call of `op` with `errno`, once.
    pub fn fail(&self, op: Op, errno: Errno, nth: usize) {
        self.plan.lock().unwrap().faults.push(Fault {
            op,
            errno,
            skip: nth - 1,
            times: Some(1),
        });
    }

    /// Fails every call of `op` from the `nth` next one on.
    pub fn fail_from(&self, op: Op, errno: Errno, nth: usize) {
        self.plan.lock().unwrap().faults.push(Fault {
            op,
            errno,
            skip: nth - 1,
            times: None,
        });
    }

    /// Removes every pending fault.
    pub fn heal(&self) {
        self.plan.lock().unwrap().faults.clear();
    }

    /// Runs `action` (given the call's first path, or the lock's for file
    /// operations) just before the `nth` next call of `op`.
    pub fn before(&self, op: Op, nth: usize, action: impl FnOnce(&Path) + Send + 'static) {
        self.plan.lock().unwrap().hooks.push(Hook {
            op,
            skip: nth - 1,
            action: Box::new(action),
        });
    }

    pub fn log(&self) -> Vec<(Op, PathBuf)> {
        self.plan.lock().unwrap().log.clone()
    }

    pub fn ops(&self) -> Vec<Op> {
        self.log().into_iter().map(|(op, _)| op).collect()
    }

    pub fn reads(&self) -> Vec<(usize, usize)> {
        self.plan.lock().unwrap().reads.clone()
    }

    pub fn opened(&self) -> Vec<(u64, u64)> {
        self.plan.lock().unwrap().opened.clone()
    }

    /// How many faults were injected so far.
    pub fn injected(&self) -> usize {
        self.plan.lock().unwrap().injected
    }

    pub fn clear_log(&self) {
        let mut plan = self.plan.lock().unwrap();
        plan.log.clear();
        plan.reads.clear();
        plan.opened.clear();
    }

    /// Logs the call, runs a due hook, and returns a due fault.
    fn enter(&self, op: Op, path: &Path) -> io::Result<()> {
        let (action, fault) = {
            let mut plan = self.plan.lock().unwrap();
            plan.log.push((op, path.to_path_buf()));
            let mut action = None;
            let mut i = 0;
            while i < plan.hooks.len() {
                if plan.hooks[i].op != op {
                    i += 1;
                } else if plan.hooks[i].skip > 0 {
                    plan.hooks[i].skip -= 1;
                    i += 1;
                } else if action.is_none() {
                    action = Some(plan.hooks.remove(i).action);
                } else {
                    i += 1;
                }
            }
            let mut fault = None;
            for f in plan.faults.iter_mut().filter(|f| f.op == op) {
                if f.skip > 0 {
                    f.skip -= 1;
                } else if fault.is_none() && f.times != Some(0) {
                    fault = Some(f.errno);
                    if let Some(times) = &mut f.times {
                        *times -= 1;
                    }
                }
            }
            if fault.is_some() {
                plan.injected += 1;
            }
            (action, fault)
        };
        if let Some(action) = action {
            action(path);
        }
        match fault {
            Some(errno) => Err(io::Error::from_raw_os_error(errno.raw_os_error())),
            None => Ok(()),
        }
    }

    fn note_open(&self, file: &RealFile) {
        if let Ok(meta) = futures::executor::block_on(file.fstat()) {
            self.plan.lock().unwrap().opened.push((meta.dev, meta.ino));
        }
    }
}

#[derive(Debug)]
pub struct FaultFile {
    inner: RealFile,
    vfs: FaultVfs,
    path: PathBuf,
}

// Every call is made inside the returned future, after `enter`, so that a
// hook runs before the real call.
impl Vfs for FaultVfs {
    type File = FaultFile;

    const BLOCKING_OK: bool = true;

    fn create_dir_all(&self, path: &Path) -> impl Future<Output = io::Result<()>> + Send {
        let entered = self.enter(Op::CreateDirAll, path);
        async move {
            entered?;
            RealFs.create_dir_all(path).await
        }
    }

    fn create_new(&self, path: &Path) -> impl Future<Output = io::Result<FaultFile>> + Send {
        let entered = self.enter(Op::Create, path);
        let vfs = self.clone();
        async move {
            entered?;
            let inner = RealFs.create_new(path).await?;
            vfs.note_open(&inner);
            Ok(FaultFile {
                inner,
                vfs,
                path: path.to_path_buf(),
            })
        }
    }

    fn open_read(&self, path: &Path) -> impl Future<Output = io::Result<FaultFile>> + Send {
        let entered = self.enter(Op::OpenRead, path);
        let vfs = self.clone();
        async move {
            entered?;
            let inner = RealFs.open_read(path).await?;
            vfs.note_open(&inner);
            Ok(FaultFile {
                inner,
                vfs,
                path: path.to_path_buf(),
            })
        }
    }

    fn lstat(&self, path: &Path) -> impl Future<Output = io::Result<Meta>> + Send {
        let entered = self.enter(Op::Lstat, path);
        async move {
            entered?;
            RealFs.lstat(path).await
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> impl Future<Output = io::Result<()>> + Send {
        let entered = self.enter(Op::Rename, to);
        async move {
            entered?;
            RealFs.rename(from, to).await
        }
    }

    fn link(&self, from: &Path, to: &Path) -> impl Future<Output = io::Result<()>> + Send {
        let entered = self.enter(Op::Link, from);
        async move {
            entered?;
            RealFs.link(from, to).await
        }
    }

    fn unlink(&self, path: &Path) -> impl Future<Output = io::Result<()>> + Send {
        let entered = self.enter(Op::Unlink, path);
        async move {
            entered?;
            RealFs.unlink(path).await
        }
    }

    fn list_dir(
        &self,
        dir: &Path,
    ) -> impl Future<Output = io::Result<Vec<std::ffi::OsString>>> + Send {
        RealFs.list_dir(dir)
    }
}

impl VfsFile for FaultFile {
    fn write_all(&self, bytes: &[u8]) -> impl Future<Output = io::Result<()>> + Send {
        let entered = self.vfs.enter(Op::Write, &self.path);
        async move {
            entered?;
            self.inner.write_all(bytes).await
        }
    }

    fn read_capped(&self, max: usize) -> impl Future<Output = io::Result<Vec<u8>>> + Send {
        let entered = self.vfs.enter(Op::Read, &self.path);
        async move {
            entered?;
            let bytes = self.inner.read_capped(max).await?;
            self.vfs.plan.lock().unwrap().reads.push((max, bytes.len()));
            Ok(bytes)
        }
    }

    fn fstat(&self) -> impl Future<Output = io::Result<Meta>> + Send {
        let entered = self.vfs.enter(Op::Fstat, &self.path);
        async move {
            entered?;
            self.inner.fstat().await
        }
    }

    fn set_mtime(&self, mtime: SystemTime) -> impl Future<Output = io::Result<()>> + Send {
        let entered = self.vfs.enter(Op::SetMtime, &self.path);
        async move {
            entered?;
            self.inner.set_mtime(mtime).await
        }
    }

    fn sync(&self) -> impl Future<Output = io::Result<()>> + Send {
        let entered = self.vfs.enter(Op::Sync, &self.path);
        async move {
            entered?;
            self.inner.sync().await
        }
    }
}

/// A full lock (acquire machine, heartbeat, release) on `path` over `vfs`.
pub fn lock_on<R: Runtime>(
    path: &Path,
    vfs: &FaultVfs,
    runtime: R,
    options: LockOptions,
    sync_writes: bool,
) -> Lock {
    let backend = FsBackend::with_vfs(path, vfs.clone())
        .unwrap()
        .sync_writes(sync_writes);
    Lock::new(Arc::new(backend), Arc::new(runtime), options).unwrap()
}

/// Collects the warnings a lock reports through `on_warning`.
#[derive(Clone, Default)]
pub struct Warnings(Arc<Mutex<Vec<String>>>);

impl Warnings {
    pub fn hook(&self, options: LockOptions) -> LockOptions {
        let sink = Arc::clone(&self.0);
        options.on_warning(move |w| sink.lock().unwrap().push(w.message.clone()))
    }

    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn any(&self, needle: &str) -> bool {
        self.all().iter().any(|w| w.contains(needle))
    }
}
