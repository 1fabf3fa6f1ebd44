//! Helpers shared by the integration tests of heldlock-core.
#![allow(dead_code, unreachable_pub)]

pub mod gated;
pub mod hooked;

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

/// A visible, countable skip, shared by every test suite of the workspace
/// (not every test binary that includes this module makes one).
#[allow(unused_imports)]
pub use heldlock_testkit::skip;
