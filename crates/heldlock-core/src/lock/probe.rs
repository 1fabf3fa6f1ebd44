//! Same-host liveness: whether a lock's holder process is known to be dead.

use std::fmt;

use super::backend::ChangeListener;
use super::record::LockRecord;

/// What this host can tell about the processes that hold locks.
///
/// A holder writes [`fields`](Self::fields) into its record (on Linux:
/// `host=`, `boot=`, `pidns=`, `timens=`, `start=`). A waiter whose own
/// fields say it is on the same host, boot, pid and time namespace can then
/// ask the operating system
/// whether the holder's pid still runs with the same start time, and break
/// the lock of a dead holder at once instead of waiting for it to go stale.
/// Everything else (another host or namespace, a record without the fields,
/// such as the reference's) falls back to stale judgment.
pub trait HostProbe: Send + Sync + fmt::Debug + 'static {
    /// The fields that identify this process to a peer on the same host.
    fn fields(&self) -> Vec<(String, String)>;

    /// Whether the process that wrote `record` is known to be gone. Must
    /// return `false` whenever that cannot be proven (other host, other boot
    /// or pid namespace, missing fields, permission errors).
    fn holder_is_dead(&self, record: &LockRecord) -> bool;

    /// Whether the process that wrote `record` ran on this very host and
    /// boot, so that a kernel lock it holds on the lock (see
    /// [`Observed::kernel_held`](crate::Observed::kernel_held)) is visible
    /// here and proves a live holder. Must return `false` when that cannot
    /// be proven (the default).
    fn shares_host(&self, record: &LockRecord) -> bool {
        let _ = record;
        false
    }

    /// A future that completes when the process that wrote `record` exits,
    /// when this host can watch it (Linux: a pidfd). `None` otherwise.
    fn watch_exit(&self, record: &LockRecord) -> Option<ChangeListener> {
        let _ = record;
        None
    }
}
