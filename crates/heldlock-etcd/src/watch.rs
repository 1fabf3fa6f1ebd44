//! `listen`: a watch of the lock key's deletions.

use etcd_client::{WatchClient, WatchFilterType, WatchOptions};
use heldlock_core::ChangeListener;

/// A future that completes once `key` is deleted at or after revision
/// `from` (0: from the moment the watch is made), by a release, a break or
/// its lease's end.
///
/// The watch is made when the future is first polled; starting it at a
/// revision the handle already saw means a deletion between `listen()` and
/// that first poll is still delivered. A deletion before the look that
/// found the lock busy wakes the waiter once for nothing, which the
/// contract allows. So does every failure: a watch that cannot be made or
/// breaks (etcd down, the revision compacted away) completes, and the
/// waiter's next step meets the error itself, or finds the lock free.
pub(crate) fn deletions(mut watch: WatchClient, key: Vec<u8>, from: i64) -> ChangeListener {
    Box::pin(async move {
        let options = WatchOptions::new()
            .with_start_revision(from)
            // Puts (a holder's refresh) cannot free the lock.
            .with_filters([WatchFilterType::NoPut]);
        let Ok(mut stream) = watch.watch(key, Some(options)).await else {
            return;
        };
        loop {
            match stream.message().await {
                // With puts filtered out every event is a deletion. (Not
                // `event_type()`: it panics on a type it does not know.)
                Ok(Some(response)) if response.canceled() || !response.events().is_empty() => {
                    return;
                }
                // The "created" answer, or a progress notice.
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            }
        }
        // Dropping the stream closes it, which cancels the watch in etcd.
    })
}
