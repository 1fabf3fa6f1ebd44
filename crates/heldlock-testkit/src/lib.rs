//! What heldlock's test suites share: a skip that cannot pass for a run.
//!
//! A test that needs what a machine may not offer (root, `unshare`,
//! inotify, a tmpfs, an `etcd` binary) and cannot run calls [`skip`]:
//!
//! ```no_run
//! fn inotify_works() -> bool {
//!     false
//! }
//!
//! if !inotify_works() {
//!     heldlock_testkit::skip("wakes_on_release", "inotify is not available here");
//! }
//! ```
//!
//! The line `SKIPPED <test>: <reason>` goes to the process's stderr
//! directly, past the test harness's capture of `eprintln!` (so it shows with
//! and without `--nocapture`; count skips with `grep -c '^SKIPPED'`), and is
//! appended to the file named by `HELDLOCK_SKIP_LOG` when that is set. Under
//! `HELDLOCK_REQUIRE_ALL_TESTS=1` (CI, on a machine that can run every test)
//! a skip fails the test instead.

use std::io::Write as _;

pub mod leftovers;

/// Reports that `test` cannot run here, for `reason`, and returns so that
/// the test can end early; see the [crate docs](crate).
///
/// # Panics
///
/// Under `HELDLOCK_REQUIRE_ALL_TESTS=1`: the test must run.
pub fn skip(test: &str, reason: &str) {
    skip_unless_required(test, reason, &[]);
}

/// [`skip`], also failing under any of the variables `also` set to `1`
/// (narrower switches such as `HELDLOCK_REQUIRE_ETCD`).
///
/// # Panics
///
/// Under `HELDLOCK_REQUIRE_ALL_TESTS=1` or any of `also` set to `1`.
pub fn skip_unless_required(test: &str, reason: &str, also: &[&str]) {
    for var in std::iter::once("HELDLOCK_REQUIRE_ALL_TESTS").chain(also.iter().copied()) {
        assert!(
            std::env::var(var).as_deref() != Ok("1"),
            "{test} must run ({var}=1), but {reason}"
        );
    }
    let line = format!("SKIPPED {test}: {reason}\n");
    // Nothing better to do if stderr or the log cannot be written.
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(log) = std::env::var_os("HELDLOCK_SKIP_LOG")
        && let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
    {
        let _ = file.write_all(line.as_bytes());
    }
}
