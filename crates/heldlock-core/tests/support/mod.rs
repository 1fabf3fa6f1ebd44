//! Helpers shared by the integration tests of heldlock-core.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Re-runs an async test body on every executor the core must work on:
/// tokio's multi-thread runtime, async-std, and `futures::executor::block_on`
/// (no runtime at all).
#[macro_export]
macro_rules! on_every_runtime {
    ($(async fn $name:ident() $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn body() $body

            #[test]
            fn tokio_multi_thread() {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("build a tokio runtime")
                    .block_on(body());
            }

            #[test]
            fn async_std() {
                async_std::task::block_on(body());
            }

            #[test]
            fn block_on() {
                futures::executor::block_on(body());
            }
        }
    )*};
}

/// Returns `Pending` once (after waking itself), so that other futures joined
/// with the caller get polled: a runtime-agnostic `yield_now`.
pub fn yield_now() -> impl Future<Output = ()> {
    struct YieldNow(bool);
    impl Future for YieldNow {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.0 {
                Poll::Ready(())
            } else {
                self.0 = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
    YieldNow(false)
}

/// Reports that `test` cannot run here, for `reason`, and returns so that
/// the test can end early.
///
/// A skip must not pass for a run: the line `SKIPPED <test>: <reason>` goes
/// to the process's stderr directly, past the harness's capture of
/// `eprintln!` (so it shows with and without `--nocapture`; count the
/// skips with `grep -c '^SKIPPED'`), and it is appended to the file named by
/// `HELDLOCK_SKIP_LOG` when that is set. Under
/// `HELDLOCK_REQUIRE_ALL_TESTS=1` (CI on a machine that can run every
/// test) a skip fails the test instead.
pub fn skip(test: &str, reason: &str) {
    skip_unless_required(test, reason, &[]);
}

/// [`skip`], also failing under any of `also` set to `1` (older, narrower
/// names of `HELDLOCK_REQUIRE_ALL_TESTS`).
pub fn skip_unless_required(test: &str, reason: &str, also: &[&str]) {
    use std::io::Write as _;
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
