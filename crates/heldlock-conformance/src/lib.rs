//! The conformance suite every heldlock `LockBackend` runs: public async check
//! functions and one `run_all`, so that the author of a custom backend runs
//! exactly the checks that heldlock's own backends run. (Arrives with the
//! held-lock work.)
#![warn(missing_docs)]
