//! The check of [`LockBackend::listen`], and the deadline its waits end at.
//!
//! This is the one check that waits in real time: a notification comes
//! from outside the caller's task (a watcher thread, a server), so nothing
//! else tells "late" from "never". The wait ends as soon as the listener
//! completes, and at the latest after [`Capabilities::notify_within`].

use std::future::poll_fn;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::task::{Poll, Waker};
use std::thread;
use std::time::Duration;

use heldlock_core::{Broke, ChangeListener, Created, LockBackend, Released};

use crate::cancel::poll_at_most;
use crate::capabilities::Capabilities;
use crate::factory::BackendFactory;
use crate::harness::{Cx, PID_A};
use crate::report::Failure;

/// For a backend that claims [`Capabilities::listen`]: `listen` returns
/// `Some` on every call; a listener polled once and dropped leaves the lock
/// untouched; a listener taken while A holds the lock, and first polled only
/// after A released it, completes (no wake-up is lost between subscribing
/// and waiting); and one taken before peer C breaks the lock completes after
/// the break. Each must complete within [`Capabilities::notify_within`].
///
/// Spurious completions are allowed by the contract, so no check demands
/// that a listener stays pending. Without the claim there is nothing to
/// check: this function passes at once, and [`CHECKS`](crate::CHECKS)
/// reports the check skipped.
///
/// # Errors
///
/// A [`Failure`] naming the first step that broke the contract.
pub async fn check_listen(factory: &dyn BackendFactory, caps: Capabilities) -> Result<(), Failure> {
    let cx = Cx::new("listen", factory, caps)?;
    if !caps.listen {
        return Ok(());
    }
    let (a, b, c) = (cx.open("A")?, cx.open("B")?, cx.open("C")?);
    let record = cx.a_creates(&*a).await?;
    let held = cx
        .present(&*a, &record, record.acquired_at, "inspect after A's create")
        .await?;

    // Completing at once is allowed; either way the listener is dropped.
    let dropped = listener(&cx, &*b, "B's first listen while A holds")?;
    let _ = poll_at_most(dropped, 1).await;
    cx.unchanged(&*a, &held, "inspect after B dropped a listener")
        .await?;

    let released = listener(&cx, &*b, "B's listen while A holds")?;
    cx.release(&*a, &record.owner, Released::Released, "A's release")
        .await?;
    notified(
        &cx,
        released,
        "B's listener, taken before A's release and first polled after it",
    )
    .await?;

    let record = cx.record(PID_A, cx.at(1));
    cx.try_create(&*a, &record, Created::Created, "A's second try_create")
        .await?;
    let seen = cx
        .present(&*c, &record, record.acquired_at, "C's inspect of A's lock")
        .await?;
    let broken = listener(&cx, &*b, "B's listen while A holds again")?;
    cx.break_if_unchanged(&*c, &seen, Broke::Broken, "C's break of A's lock")
        .await?;
    notified(&cx, broken, "B's listener, taken before C's break").await?;
    cx.absent(&*b, "inspect after C's break").await
}

/// `handle`'s listener, which the claim requires.
fn listener(cx: &Cx, handle: &dyn LockBackend, step: &str) -> Result<ChangeListener, Failure> {
    handle.listen().ok_or_else(|| {
        cx.mismatch(
            step,
            "Some(listener), since Capabilities::listen is claimed".into(),
            "None (no notification)".into(),
        )
    })
}

/// Waits for `listener` to complete, at most [`Capabilities::notify_within`].
async fn notified(cx: &Cx, mut listener: ChangeListener, step: &str) -> Result<(), Failure> {
    let limit = cx.caps().notify_within;
    let deadline = Deadline::start(limit).map_err(|error| {
        cx.cannot_run(format!(
            "could not start the thread that ends the wait for \"{step}\": {error}"
        ))
    })?;
    let completed = poll_fn(|task| {
        if listener.as_mut().poll(task).is_ready() {
            Poll::Ready(true)
        } else if deadline.passed(task.waker()) {
            Poll::Ready(false)
        } else {
            Poll::Pending
        }
    })
    .await;
    if completed {
        Ok(())
    } else {
        Err(cx.mismatch(
            step,
            format!("completes within {limit:?} (Capabilities::notify_within)"),
            format!("still pending after {limit:?}"),
        ))
    }
}

/// Wakes a waiting task once `limit` has passed, from a thread of its own:
/// the suite has no runtime and so no timer. Dropping it ends the thread at
/// once.
struct Deadline {
    expiry: Arc<Expiry>,
    /// Dropped with the deadline, which disconnects the thread's channel.
    _stop: mpsc::Sender<()>,
}

#[derive(Default)]
struct Expiry {
    passed: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Deadline {
    fn start(limit: Duration) -> io::Result<Self> {
        let expiry = Arc::new(Expiry::default());
        let (stop, stopped) = mpsc::channel::<()>();
        let timer = Arc::clone(&expiry);
        thread::Builder::new()
            .name("heldlock-conformance-deadline".into())
            .spawn(move || {
                // Disconnected (the deadline was dropped): nothing to do.
                if let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(limit) {
                    timer.passed.store(true, Ordering::SeqCst);
                    let waker = timer
                        .waker
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .take();
                    if let Some(waker) = waker {
                        waker.wake();
                    }
                }
            })?;
        Ok(Deadline {
            expiry,
            _stop: stop,
        })
    }

    /// Whether the deadline passed; if not, `waker` is woken when it does.
    /// The waker is stored before the flag is read, so that an expiry in
    /// between still wakes it.
    fn passed(&self, waker: &Waker) -> bool {
        *self
            .expiry
            .waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(waker.clone());
        self.expiry.passed.load(Ordering::SeqCst)
    }
}
