//! What a waiter learns about a holder beyond the lock itself: the record it
//! writes about itself, and whether the host can prove the holder dead.

use std::time::Duration;

use super::acquire::Event;
use super::backend::ChangeListener;
use super::handle::Lock;
use super::record::{Holder, Inspection, LockRecord};
use crate::error::Error;

/// How soon a waiter looks again at a lock that a live process holds
/// through a kernel lock while the holder that wrote the record is gone:
/// the moment that process exits is not notified, and a takeover should
/// come about as fast as after a crashed holder.
pub(crate) const ORPHAN_RECHECK: Duration = Duration::from_millis(25);

impl Lock {
    /// The record an acquisition writes: this process, a fresh owner id, and
    /// the host probe's fields.
    pub(super) fn record_for_this_process(&self) -> LockRecord {
        let mut record = LockRecord::for_this_process(self.runtime.now());
        if let Some(probe) = &self.probe {
            record.fields = probe.fields();
        }
        // Contenders with a shorter `stale` honour ours (see
        // `LockOptions::max_declared_stale`).
        let millis = u64::try_from(self.timing.stale.as_millis()).unwrap_or(u64::MAX);
        record
            .fields
            .push((LockRecord::STALE_FIELD.to_owned(), millis.to_string()));
        record
    }

    /// Inspects the lock; asks the host probe whether a present holder is
    /// dead, and adds a watch on its exit to `wake` when it is alive here.
    ///
    /// A kernel lock on a lock of this host is proof of life and comes
    /// first: the holder, or a command that inherited its descriptor, still
    /// runs, even when the holder's own pid is gone (`heldlock run`'s wrapper
    /// was killed and its command lives on). Nothing then tells when the
    /// last such process exits, so the waiter looks again after
    /// [`ORPHAN_RECHECK`] rather than its whole poll.
    pub(super) async fn inspect_judging_liveness(
        &self,
        wake: &mut Vec<ChangeListener>,
    ) -> Result<Event, Error> {
        let inspection = self.backend.inspect().await?;
        if let (Some(probe), Inspection::Present(observed)) = (&self.probe, &inspection)
            && let Holder::Record(record) = &observed.holder
        {
            if observed.kernel_held && probe.shares_host(record) {
                if probe.holder_is_dead(record) {
                    wake.push(self.runtime.sleep(ORPHAN_RECHECK));
                } else {
                    wake.extend(probe.watch_exit(record));
                }
                return Ok(Event::HolderAlive(observed.clone()));
            }
            // The exit watch first: a holder whose watch is in place is known
            // alive without asking the operating system a second time.
            let exit = probe.watch_exit(record);
            if probe.holder_is_dead(record) {
                return Ok(Event::HolderDead(observed.clone()));
            }
            wake.extend(exit);
        }
        Ok(Event::Inspected(inspection))
    }
}
