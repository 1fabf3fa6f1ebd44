//! Held locks: the backend contract, the lock record, the pure machines
//! (acquire, stale judgment, heartbeat) and their async driver.

pub mod acquire;
pub(crate) mod backend;
mod driver;
pub(crate) mod handle;
pub mod heartbeat;
pub(crate) mod lease;
pub(crate) mod liveness;
pub(crate) mod logs;
pub(crate) mod memory;
pub(crate) mod options;
pub(crate) mod probe;
pub(crate) mod record;
pub mod stale;
