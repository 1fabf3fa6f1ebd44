//! The checks of the contract's steps. Each takes a fresh resource from the
//! factory, plays one or more simulated processes through their own
//! handles, and compares every answer and every later inspection with what
//! the `LockBackend` contract requires. No check sleeps: every stamp is given
//! explicitly. (Cancel safety and `listen` have modules of their own.)

mod breaking;
mod creating;
mod owning;

pub use breaking::{
    check_break_absent, check_break_after_refresh, check_break_current, check_break_replaced,
};
pub use creating::{
    RACERS, check_create_exists, check_create_race, check_create_then_inspect,
    check_identity_per_instance, check_inspect_free,
};
pub use owning::{
    check_copied_record_not_ours, check_refresh_after_release, check_refresh_after_replacement,
    check_refresh_by_owner, check_refresh_by_stranger, check_release_after_replacement,
    check_release_blocking, check_release_by_owner, check_release_by_stranger,
};
