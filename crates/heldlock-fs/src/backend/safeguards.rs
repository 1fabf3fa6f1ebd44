//! Test-only switches that turn single safeguards of the protocol off.

/// Test-only switches, one per safeguard of the protocol, so that a
/// simulator can show that each one is needed: with a safeguard off, it must
/// find a schedule that breaks an invariant.
///
/// Only with the `safeguard-switches` feature (off by default); without it
/// the backend has no switches and always runs every safeguard. The default
/// value turns every safeguard on, which is exactly the normal protocol.
/// Never turn one off outside a test: each one guards a live holder's lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Safeguards {
    /// `release` checks that the lock is still ours (our inode at the path,
    /// our owner in its record) before it moves anything. Off: it moves
    /// whatever is at the path and relies on the check after the rename.
    pub release_precheck: bool,
    /// `break_if_unchanged` looks at the lock again and compares its identity
    /// and stamp with the observation before the rename. Off: it renames at
    /// once.
    pub reverify_before_break: bool,
    /// How a lock moved to trash by mistake is put back.
    pub restore: Restore,
    /// Ownership (for `refresh`, the heartbeat and the release pre-check) is
    /// our inode at the path and our owner in its record, and `refresh`
    /// stamps through our descriptor. Off: the reference's rule, the record
    /// read through the path names our owner, and the stamp is set through
    /// the path.
    pub inode_ownership: bool,
    /// After the rename, `break_if_unchanged` checks that what it moved is
    /// still the observed lock (identity and stamp) before unlinking it. Off:
    /// it unlinks whatever it moved.
    pub recheck_after_rename: bool,
    /// `break_if_unchanged` holds an `O_EXCL` break marker named after the
    /// observed instance from its last look to its unlink, so two breakers
    /// never act on one stale lock at once. Off: the reference's protocol,
    /// with its check-then-rename race.
    pub break_marker: bool,
}

impl Default for Safeguards {
    fn default() -> Self {
        Safeguards {
            release_precheck: true,
            reverify_before_break: true,
            restore: Restore::Link,
            inode_ownership: true,
            recheck_after_rename: true,
            break_marker: true,
        }
    }
}

/// How [`FsBackend`] puts back a lock it moved to trash by mistake; see
/// [`Safeguards::restore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restore {
    /// `link(trash, path)`, which never replaces a lock created meanwhile
    /// (the protocol).
    Link,
    /// `rename(trash, path)`, which replaces whatever was created meanwhile.
    RenameBack,
    /// No restore: the trash file is unlinked.
    Unlink,
}
