//! The simulated file system's state: inodes, directory entries, and the
//! POSIX operations on them, each one atomic and synchronous. The async
//! [`SimFs`](super::SimFs) puts a scheduling point in front of each.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use heldlock_fs::{FileKind, Meta};

use super::errno::Errno;

/// The device number every simulated inode is on.
pub(crate) const SIM_DEV: u64 = 0x5349_4d00;

/// Who did something to the file system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Actor {
    /// Contender number `n`.
    Contender(usize),
    /// An outside process acting on the lock file (a fault).
    Intruder,
    /// The scenario's initial state (a stale lock left by a dead process).
    Setup,
}

/// What an inode holds.
#[derive(Clone, Debug)]
pub(crate) enum Body {
    File(Vec<u8>),
    Dir(BTreeMap<OsString, u64>),
    Symlink(PathBuf),
}

/// One inode.
#[derive(Clone, Debug)]
pub(crate) struct Inode {
    pub(crate) body: Body,
    pub(crate) nlink: u64,
    pub(crate) mtime: SystemTime,
    pub(crate) birth: SystemTime,
    pub(crate) creator: Actor,
}

impl Inode {
    fn kind(&self) -> FileKind {
        match self.body {
            Body::File(_) => FileKind::File,
            Body::Dir(_) => FileKind::Dir,
            Body::Symlink(_) => FileKind::Symlink,
        }
    }

    fn len(&self) -> u64 {
        let len = match &self.body {
            Body::File(data) => data.len(),
            Body::Dir(entries) => entries.len(),
            Body::Symlink(target) => target.as_os_str().len(),
        };
        u64::try_from(len).unwrap_or(u64::MAX)
    }
}

/// The whole simulated file system. Inode numbers are never reused, so an
/// inode number names one file for the whole run.
#[derive(Clone, Debug)]
pub(crate) struct Tree {
    inodes: BTreeMap<u64, Inode>,
    next_ino: u64,
    root: u64,
}

impl Tree {
    /// A file system holding only `/`, made at `now`.
    pub(crate) fn new(now: SystemTime) -> Self {
        let mut tree = Tree {
            inodes: BTreeMap::new(),
            next_ino: 2,
            root: 1,
        };
        tree.inodes.insert(
            1,
            Inode {
                body: Body::Dir(BTreeMap::new()),
                nlink: 2,
                mtime: now,
                birth: now,
                creator: Actor::Setup,
            },
        );
        tree
    }

    pub(crate) fn inode(&self, ino: u64) -> Option<&Inode> {
        self.inodes.get(&ino)
    }

    pub(crate) fn meta(&self, ino: u64) -> Result<Meta, Errno> {
        let inode = self.inodes.get(&ino).ok_or(Errno::ENOENT)?;
        Ok(Meta {
            dev: SIM_DEV,
            ino,
            kind: inode.kind(),
            len: inode.len(),
            mtime: inode.mtime,
            nlink: inode.nlink,
            birth: Some(inode.birth),
        })
    }

    fn components(path: &Path) -> Result<Vec<&OsStr>, Errno> {
        let mut out = Vec::new();
        for component in path.components() {
            match component {
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                Component::Normal(name) => out.push(name),
                Component::ParentDir => {
                    if out.pop().is_none() {
                        return Err(Errno::EINVAL);
                    }
                }
            }
        }
        Ok(out)
    }

    fn entries(&self, dir: u64) -> Result<&BTreeMap<OsString, u64>, Errno> {
        match self.inodes.get(&dir).map(|i| &i.body) {
            Some(Body::Dir(entries)) => Ok(entries),
            Some(_) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn entries_mut(&mut self, dir: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match self.inodes.get_mut(&dir).map(|i| &mut i.body) {
            Some(Body::Dir(entries)) => Ok(entries),
            Some(_) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    /// The directory holding the last component of `path`, and that
    /// component. Intermediate symbolic links are not supported (the
    /// simulation never makes any): they count as non-directories.
    fn parent<'p>(&self, path: &'p Path) -> Result<(u64, &'p OsStr), Errno> {
        let parts = Self::components(path)?;
        let Some((last, dirs)) = parts.split_last() else {
            return Err(Errno::EINVAL);
        };
        let mut at = self.root;
        for name in dirs {
            at = *self.entries(at)?.get(*name).ok_or(Errno::ENOENT)?;
        }
        self.entries(at)?;
        Ok((at, last))
    }

    /// The inode `path` names, without following a symbolic link at the end.
    pub(crate) fn lookup(&self, path: &Path) -> Result<u64, Errno> {
        if Self::components(path)?.is_empty() {
            return Ok(self.root);
        }
        let (dir, name) = self.parent(path)?;
        self.entries(dir)?.get(name).copied().ok_or(Errno::ENOENT)
    }

    fn make(&mut self, body: Body, nlink: u64, now: SystemTime, creator: Actor) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(
            ino,
            Inode {
                body,
                nlink,
                mtime: now,
                birth: now,
                creator,
            },
        );
        ino
    }

    /// `mkdir -p`.
    pub(crate) fn create_dir_all(
        &mut self,
        path: &Path,
        now: SystemTime,
        by: Actor,
    ) -> Result<(), Errno> {
        let parts = Self::components(path)?;
        let mut at = self.root;
        for name in parts {
            let existing = self.entries(at)?.get(name).copied();
            at = match existing {
                Some(ino) => match self.inodes.get(&ino).map(|i| &i.body) {
                    Some(Body::Dir(_)) => ino,
                    _ => return Err(Errno::ENOTDIR),
                },
                None => {
                    let ino = self.make(Body::Dir(BTreeMap::new()), 2, now, by);
                    self.entries_mut(at)?.insert(name.to_owned(), ino);
                    ino
                }
            };
        }
        Ok(())
    }

    /// `open(O_CREAT | O_EXCL | O_NOFOLLOW)`: a new empty regular file.
    pub(crate) fn create_new(
        &mut self,
        path: &Path,
        now: SystemTime,
        by: Actor,
    ) -> Result<u64, Errno> {
        self.create(path, Body::File(Vec::new()), now, by)
    }

    /// `symlink(target, path)`.
    pub(crate) fn symlink(
        &mut self,
        target: &Path,
        path: &Path,
        now: SystemTime,
        by: Actor,
    ) -> Result<u64, Errno> {
        self.create(path, Body::Symlink(target.to_owned()), now, by)
    }

    fn create(
        &mut self,
        path: &Path,
        body: Body,
        now: SystemTime,
        by: Actor,
    ) -> Result<u64, Errno> {
        let (dir, name) = self.parent(path)?;
        if self.entries(dir)?.contains_key(name) {
            // Anything at all, a dangling symbolic link included.
            return Err(Errno::EEXIST);
        }
        let ino = self.make(body, 1, now, by);
        self.entries_mut(dir)?.insert(name.to_owned(), ino);
        Ok(ino)
    }

    /// `open(O_RDONLY | O_NOFOLLOW)`: the inode, unless it is a symbolic link.
    pub(crate) fn open(&self, path: &Path) -> Result<u64, Errno> {
        let ino = self.lookup(path)?;
        match self.inodes.get(&ino).map(|i| &i.body) {
            Some(Body::Symlink(_)) => Err(Errno::ELOOP),
            Some(_) => Ok(ino),
            None => Err(Errno::ENOENT),
        }
    }

    /// `rename(from, to)`: atomic, replacing `to`. Returns the inode moved
    /// and the inode replaced, if any.
    pub(crate) fn rename(&mut self, from: &Path, to: &Path) -> Result<(u64, Option<u64>), Errno> {
        let (from_dir, from_name) = self.parent(from)?;
        let moved = *self
            .entries(from_dir)?
            .get(from_name)
            .ok_or(Errno::ENOENT)?;
        let (to_dir, to_name) = self.parent(to)?;
        let replaced = self.entries(to_dir)?.get(to_name).copied();
        if let Some(old) = replaced {
            if old == moved {
                // Two names of one inode: POSIX says do nothing.
                return Ok((moved, None));
            }
            let moved_is_dir =
                matches!(self.inodes.get(&moved).map(|i| &i.body), Some(Body::Dir(_)));
            match self.inodes.get(&old).map(|i| &i.body) {
                Some(Body::Dir(entries)) if !moved_is_dir => {
                    let _ = entries;
                    return Err(Errno::EISDIR);
                }
                Some(Body::Dir(entries)) if !entries.is_empty() => return Err(Errno::ENOTEMPTY),
                Some(Body::Dir(_)) => {}
                _ if moved_is_dir => return Err(Errno::ENOTDIR),
                _ => {}
            }
        }
        self.entries_mut(from_dir)?.remove(from_name);
        self.entries_mut(to_dir)?.insert(to_name.to_owned(), moved);
        if let Some(old) = replaced
            && let Some(inode) = self.inodes.get_mut(&old)
        {
            inode.nlink = inode.nlink.saturating_sub(1);
        }
        Ok((moved, replaced))
    }

    /// `renameat2(a, b, RENAME_EXCHANGE)`: swaps the inodes two existing
    /// names refer to, atomically. Returns the inodes now at `a` and `b`.
    pub(crate) fn exchange(&mut self, a: &Path, b: &Path) -> Result<(u64, u64), Errno> {
        let (a_dir, a_name) = self.parent(a)?;
        let (b_dir, b_name) = self.parent(b)?;
        let at_a = *self.entries(a_dir)?.get(a_name).ok_or(Errno::ENOENT)?;
        let at_b = *self.entries(b_dir)?.get(b_name).ok_or(Errno::ENOENT)?;
        self.entries_mut(a_dir)?.insert(a_name.to_owned(), at_b);
        self.entries_mut(b_dir)?.insert(b_name.to_owned(), at_a);
        Ok((at_b, at_a))
    }

    /// `link(from, to)` (not following a symbolic link at `from`): never
    /// replaces anything.
    pub(crate) fn link(&mut self, from: &Path, to: &Path) -> Result<u64, Errno> {
        let ino = self.lookup(from)?;
        if matches!(self.inodes.get(&ino).map(|i| &i.body), Some(Body::Dir(_))) {
            return Err(Errno::EPERM);
        }
        let (dir, name) = self.parent(to)?;
        if self.entries(dir)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        self.entries_mut(dir)?.insert(name.to_owned(), ino);
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.nlink += 1;
        }
        Ok(ino)
    }

    /// `unlink(path)`: removes the name (not a directory). Returns the inode.
    pub(crate) fn unlink(&mut self, path: &Path) -> Result<u64, Errno> {
        let (dir, name) = self.parent(path)?;
        let ino = *self.entries(dir)?.get(name).ok_or(Errno::ENOENT)?;
        if matches!(self.inodes.get(&ino).map(|i| &i.body), Some(Body::Dir(_))) {
            return Err(Errno::EISDIR);
        }
        self.entries_mut(dir)?.remove(name);
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.nlink = inode.nlink.saturating_sub(1);
        }
        Ok(ino)
    }

    /// Writes `bytes` at offset 0 of an open inode.
    pub(crate) fn write(&mut self, ino: u64, bytes: &[u8], now: SystemTime) -> Result<(), Errno> {
        let inode = self.inodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        match &mut inode.body {
            Body::File(data) => {
                if data.len() < bytes.len() {
                    data.resize(bytes.len(), 0);
                }
                data[..bytes.len()].copy_from_slice(bytes);
                inode.mtime = now;
                Ok(())
            }
            Body::Dir(_) => Err(Errno::EISDIR),
            Body::Symlink(_) => Err(Errno::EINVAL),
        }
    }

    /// Reads at most `max` bytes from offset 0 of an open inode.
    pub(crate) fn read(&self, ino: u64, max: usize) -> Result<Vec<u8>, Errno> {
        match self.inodes.get(&ino).map(|i| &i.body) {
            Some(Body::File(data)) => Ok(data[..data.len().min(max)].to_vec()),
            Some(Body::Dir(_)) => Err(Errno::EISDIR),
            Some(Body::Symlink(_)) => Err(Errno::EINVAL),
            None => Err(Errno::ENOENT),
        }
    }

    /// Sets an open inode's modification time.
    pub(crate) fn set_mtime(&mut self, ino: u64, mtime: SystemTime) -> Result<(), Errno> {
        let inode = self.inodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        inode.mtime = mtime;
        Ok(())
    }

    /// The names in the directory `dir` (sorted), or nothing if it is not one.
    pub(crate) fn list(&self, dir: &Path) -> Vec<(OsString, u64)> {
        self.lookup(dir)
            .and_then(|ino| self.entries(ino))
            .map(|entries| entries.iter().map(|(n, i)| (n.clone(), *i)).collect())
            .unwrap_or_default()
    }

    /// A new regular file with `content` and `mtime`, not linked anywhere
    /// yet: the first half of an outside tool's "write a copy, rename it over".
    pub(crate) fn copy_of(&mut self, ino: u64, now: SystemTime, by: Actor) -> Option<u64> {
        let inode = self.inodes.get(&ino)?;
        let Body::File(data) = &inode.body else {
            return None;
        };
        let (data, mtime) = (data.clone(), inode.mtime);
        let copy = self.make(Body::File(data), 0, now, by);
        if let Some(inode) = self.inodes.get_mut(&copy) {
            inode.mtime = mtime;
        }
        Some(copy)
    }

    /// Links an unlinked inode made by [`copy_of`](Self::copy_of) at `path`,
    /// replacing what is there (the second half: the rename).
    pub(crate) fn install(&mut self, ino: u64, path: &Path) -> Result<Option<u64>, Errno> {
        let (dir, name) = self.parent(path)?;
        let replaced = self.entries_mut(dir)?.insert(name.to_owned(), ino);
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.nlink += 1;
        }
        if let Some(old) = replaced
            && let Some(inode) = self.inodes.get_mut(&old)
        {
            inode.nlink = inode.nlink.saturating_sub(1);
        }
        Ok(replaced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn t() -> SystemTime {
        UNIX_EPOCH
    }

    #[test]
    fn exclusive_create_rename_link_unlink() {
        let mut fs = Tree::new(t());
        let me = Actor::Setup;
        fs.create_dir_all(Path::new("/a/b"), t(), me).unwrap();
        let lock = Path::new("/a/b/l");
        let trash = Path::new("/a/b/t");
        let ino = fs.create_new(lock, t(), me).unwrap();
        assert_eq!(fs.create_new(lock, t(), me), Err(Errno::EEXIST));
        assert_eq!(fs.rename(lock, trash), Ok((ino, None)));
        assert_eq!(fs.lookup(lock), Err(Errno::ENOENT));
        let other = fs.create_new(lock, t(), me).unwrap();
        assert_eq!(fs.link(trash, lock), Err(Errno::EEXIST));
        assert_eq!(fs.rename(trash, lock), Ok((ino, Some(other))));
        assert_eq!(fs.meta(other).unwrap().nlink, 0);
        assert_eq!(fs.unlink(lock), Ok(ino));
        assert_eq!(fs.meta(ino).unwrap().nlink, 0);
        // An open descriptor outlives the unlink.
        fs.write(ino, b"x", t()).unwrap();
        assert_eq!(fs.read(ino, 10).unwrap(), b"x");
    }

    #[test]
    fn a_dangling_symlink_blocks_exclusive_create_and_is_never_opened() {
        let mut fs = Tree::new(t());
        let me = Actor::Setup;
        let path = Path::new("/l");
        fs.symlink(Path::new("/nowhere"), path, t(), me).unwrap();
        assert_eq!(fs.create_new(path, t(), me), Err(Errno::EEXIST));
        assert_eq!(fs.open(path), Err(Errno::ELOOP));
        assert_eq!(
            fs.meta(fs.lookup(path).unwrap()).unwrap().kind,
            FileKind::Symlink
        );
    }

    #[test]
    fn missing_parents_and_files_in_the_way() {
        let mut fs = Tree::new(t());
        let me = Actor::Setup;
        assert_eq!(
            fs.create_new(Path::new("/d/l"), t(), me),
            Err(Errno::ENOENT)
        );
        fs.create_new(Path::new("/f"), t(), me).unwrap();
        assert_eq!(
            fs.create_new(Path::new("/f/l"), t(), me),
            Err(Errno::ENOTDIR)
        );
        assert_eq!(
            fs.create_dir_all(Path::new("/f/x"), t(), me),
            Err(Errno::ENOTDIR)
        );
    }
}
