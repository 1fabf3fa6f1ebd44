//! What a waiter learns about a holder beyond the lock itself: the record it
//! writes about itself, and whether the host can prove the holder dead.

use super::acquire::Event;
use super::backend::ChangeListener;
use super::handle::Lock;
use super::record::{Holder, Inspection, LockRecord};
use crate::error::Error;

impl Lock {
    /// The record an acquisition writes: this process, a fresh owner id, and
    /// the host probe's fields.
    pub(super) fn record_for_this_process(&self) -> LockRecord {
        let mut record = LockRecord::for_this_process(self.runtime.now());
        if let Some(probe) = &self.probe {
            record.fields = probe.fields();
        }
        record
    }

    /// Inspects the lock; asks the host probe whether a present holder is
    /// dead, and adds a watch on its exit to `wake` when it is alive here.
    pub(super) async fn inspect_judging_liveness(
        &self,
        wake: &mut Vec<ChangeListener>,
    ) -> Result<Event, Error> {
        let inspection = self.backend.inspect().await?;
        if let (Some(probe), Inspection::Present(observed)) = (&self.probe, &inspection)
            && let Holder::Record(record) = &observed.holder
        {
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
