//! Whether a path lies on a network file system, where a system call can
//! hang for as long as its server is unreachable (see [`Offload`]).
//!
//! [`Offload`]: crate::Offload

use std::path::Path;

/// Whether `path` (or, while it does not exist, its nearest existing
/// ancestor: a lock file is created in its parent) lies on a network or
/// cluster file system, or on FUSE: NFS, SMB/CIFS, 9P, AFS, Ceph, Coda,
/// NCP, Lustre, GPFS, GFS2, OCFS2, BeeGFS, OrangeFS, PanFS, and anything
/// mounted through FUSE (GlusterFS, sshfs, s3fs, virtiofs, ...). Their
/// servers can stop answering, and a system call then blocks until they
/// answer again: wrap the lock's backend in [`Offload`].
///
/// FUSE counts as remote because its daemon can hang like a server, even
/// for a local FUSE file system; moving steps off the caller's thread only
/// costs a little time there.
///
/// `false` when the file system is another kind, when it cannot be told
/// (an error other than a missing name), and on systems other than Linux
/// and Android, where the kind is not reported as a magic number.
///
/// The check is one `statfs` (one more per missing path component), which
/// itself asks the server of a network file system: call it once per lock,
/// not per acquisition.
///
/// [`Offload`]: crate::Offload
pub fn is_network_fs(path: impl AsRef<Path>) -> bool {
    let mut at = path.as_ref();
    loop {
        match fs_magic(at) {
            Ok(magic) => return is_network_magic(magic),
            Err(rustix::io::Errno::NOENT) => {}
            Err(_) => return false,
        }
        // A relative path's last ancestor is the empty path: the current
        // directory.
        at = match at.parent() {
            Some(parent) if parent.as_os_str().is_empty() => Path::new("."),
            Some(parent) => parent,
            None => return false,
        };
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn fs_magic(path: &Path) -> rustix::io::Result<u64> {
    let stat = loop {
        match rustix::fs::statfs(path) {
            Err(rustix::io::Errno::INTR) => continue,
            other => break other?,
        }
    };
    // `f_type` is a signed word whose width differs between targets; every
    // magic number fits in 32 bits, and a 32-bit target would sign-extend
    // the large ones.
    #[allow(clippy::unnecessary_cast, trivial_numeric_casts)]
    let magic = (stat.f_type as u64) & 0xFFFF_FFFF;
    Ok(magic)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn fs_magic(path: &Path) -> rustix::io::Result<u64> {
    let _ = path;
    Ok(0)
}

/// `f_type` magic numbers of network, cluster and FUSE file systems, from
/// `linux/magic.h` and the file systems' own sources.
const NETWORK_MAGICS: &[(u64, &str)] = &[
    (0x6969, "nfs"),
    (0x517B, "smb"),
    (0xFF53_4D42, "cifs"),
    (0xFE53_4D42, "smb2"),
    (0x0102_1997, "9p"),
    (0x5346_414F, "afs"),
    (0x6B41_4653, "kafs"),
    (0x00C3_6400, "ceph"),
    (0x7375_7245, "coda"),
    (0x564C, "ncp"),
    (0x6573_5546, "fuse"),
    (0x0BD0_0BD0, "lustre"),
    (0x4750_4653, "gpfs"),
    (0x0116_1970, "gfs2"),
    (0x7461_636F, "ocfs2"),
    (0x1983_0326, "beegfs"),
    (0x2003_0528, "orangefs"),
    (0xAAD7_AAEA, "panfs"),
];

fn is_network_magic(magic: u64) -> bool {
    NETWORK_MAGICS.iter().any(|&(known, _)| known == magic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_magic_numbers_of_network_file_systems_are_known() {
        for magic in [0x6969, 0xFF53_4D42, 0xFE53_4D42, 0x0102_1997, 0x6573_5546] {
            assert!(is_network_magic(magic), "{magic:#x}");
        }
        // ext4, tmpfs, btrfs, xfs, overlayfs, procfs.
        for magic in [
            0xEF53,
            0x0102_1994,
            0x9123_683E,
            0x5846_5342,
            0x794C_7630,
            0x9FA0,
        ] {
            assert!(!is_network_magic(magic), "{magic:#x}");
        }
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn proc_is_local_and_a_missing_path_is_judged_by_its_ancestor() {
        assert!(!is_network_fs("/proc/self"));
        let dir = std::env::temp_dir();
        let missing = dir.join("heldlock-no-such-dir/deeper/x.lock");
        assert_eq!(is_network_fs(&missing), is_network_fs(&dir));
        assert_eq!(is_network_fs("no-such-relative/x.lock"), is_network_fs("."));
    }
}
