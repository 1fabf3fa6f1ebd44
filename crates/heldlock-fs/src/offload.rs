//! [`Offload`]: a lock backend whose steps run on a thread of their own.
//!
//! The core races every backend step against its deadline (`max_wait`, the
//! lease's expiry), but a race can only end a step that returns `Pending`.
//! [`RealFs`](crate::RealFs) makes its system calls inline, in the poll, and
//! a system call on a network file system whose server went away blocks the
//! polling thread, for minutes or for good: no timer of that task can fire,
//! and on tokio, whose idle workers drive its timers, possibly no timer of
//! the runtime. `Offload` moves each step to one worker thread per wrapped
//! backend and hands the caller a future that only waits for the answer, so
//! the core's races work again.

use std::fmt;
use std::future::Future;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::{Pin, pin};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use heldlock_core::{
    BackendError, Broke, ChangeListener, Created, Inspection, LockBackend, LockRecord, Observed,
    OwnerId, Refreshed, Released, Step,
};

/// Default of [`Offload::idle_exit`].
pub const DEFAULT_IDLE_EXIT: Duration = Duration::from_secs(60);
/// Default of [`Offload::drop_wait`].
pub const DEFAULT_DROP_WAIT: Duration = Duration::from_secs(1);

/// A [`LockBackend`] that runs every step of `B` on a worker thread, so that
/// a step that blocks its thread (a system call on a network file system
/// whose server is gone) never blocks the caller's.
///
/// Wrap a backend whose steps block, when they may block for long: the file
/// system backend on a network file system (see
/// [`is_network_fs`](crate::is_network_fs)). On a local file system the hop
/// to the worker and back costs more than the system calls it moves, so do
/// not wrap there.
///
/// * One worker thread per wrapped backend, started at the first step,
///   running steps one at a time in call order. It exits once it has been
///   idle for [`idle_exit`](Self::idle_exit), or when the backend is
///   dropped (after the steps already asked for); the next step starts a
///   new one.
/// * A step's future completes when the worker has run it, on any runtime
///   (it waits for a waker, not for a runtime's blocking pool).
/// * A step whose future is dropped before the worker starts it is skipped
///   (the backend contract allows a dropped step to be "not done"), except
///   [`release`](LockBackend::release), which runs anyway: a caller who
///   asked for one has stopped the heartbeat, and a release left undone
///   leaves the lock to go stale. A step that has started runs to its end.
/// * [`release_blocking`](LockBackend::release_blocking) (a guard's drop)
///   waits for the worker at most [`drop_wait`](Self::drop_wait); a release
///   that takes longer still completes on the worker.
/// * [`listen`](LockBackend::listen) is moved too (the file system backend
///   looks at the lock's directory to subscribe): it returns at once with a
///   listener that subscribes on the worker, before any step asked for
///   later. It therefore always returns `Some`, and a waiter sleeps `poll`
///   between looks when `B` cannot notify, rather than backing off from
///   1 ms.
///
/// A worker stuck in a system call that never returns stays stuck (a thread
/// cannot be cancelled), and the steps queued behind it wait with it: the
/// core gives up on them at their deadlines, and a new `Offload` (a new
/// lock) gets a thread of its own.
///
/// `B`'s futures are polled on the worker thread, outside any runtime: wrap
/// only a backend whose steps need no runtime (they block, or complete at
/// once), such as [`FsBackend`](crate::FsBackend) on [`RealFs`](crate::RealFs).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use heldlock_core::{Lock, LockBackend, LockOptions, ManualClock};
/// use heldlock_fs::{FsBackend, Offload, is_network_fs};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// let path = dir.path().join("db.lock");
/// let backend = FsBackend::new(&path)?;
/// let backend: Arc<dyn LockBackend> = if is_network_fs(&path) {
///     Arc::new(Offload::new(backend))
/// } else {
///     Arc::new(backend)
/// };
/// let lock = Lock::new(backend, Arc::new(ManualClock::new()), LockOptions::new(Duration::from_secs(30)))?;
/// # let held = futures::executor::block_on(lock.acquire())?;
/// # futures::executor::block_on(held.release())?;
/// # Ok(())
/// # }
/// ```
pub struct Offload<B: LockBackend> {
    inner: Arc<B>,
    worker: Arc<Worker<B>>,
    idle_exit: Duration,
    drop_wait: Duration,
}

/// A step for the worker: it runs it against the backend, and answers
/// through the completer it captured.
type Job<B> = Box<dyn FnOnce(&B, &Waker) + Send + 'static>;

/// The way to the worker thread, while one runs.
struct Worker<B> {
    jobs: Mutex<Option<mpsc::Sender<Job<B>>>>,
}

impl<B> Worker<B> {
    fn jobs(&self) -> MutexGuard<'_, Option<mpsc::Sender<Job<B>>>> {
        // Only ever replaced as a whole: a panic cannot leave it half-made.
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<B: LockBackend> Offload<B> {
    /// `backend`, with its steps moved to a worker thread.
    pub fn new(backend: B) -> Self {
        Offload {
            inner: Arc::new(backend),
            worker: Arc::new(Worker {
                jobs: Mutex::new(None),
            }),
            idle_exit: DEFAULT_IDLE_EXIT,
            drop_wait: DEFAULT_DROP_WAIT,
        }
    }

    /// How long the worker thread waits for a step before it exits (default
    /// one minute). Longer than the heartbeat, or a held lock starts a thread
    /// per beat.
    #[must_use]
    pub fn idle_exit(mut self, idle: Duration) -> Self {
        self.idle_exit = idle;
        self
    }

    /// How long a guard's drop waits for its release (default one second).
    /// The drop runs on the caller's thread, often a runtime's worker: this
    /// is how long a hung file system may block it there.
    #[must_use]
    pub fn drop_wait(mut self, wait: Duration) -> Self {
        self.drop_wait = wait;
        self
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// Queues `job`, starting a worker when none runs.
    fn submit(&self, job: Job<B>) -> io::Result<()> {
        let mut jobs = self.worker.jobs();
        let job = match jobs.as_ref() {
            Some(sender) => match sender.send(job) {
                Ok(()) => return Ok(()),
                // Its worker is gone without saying so; start another.
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        let (sender, receiver) = mpsc::channel();
        // Queued before the thread exists, so that even a worker whose idle
        // time is zero finds it.
        let _ = sender.send(job);
        let inner = Arc::clone(&self.inner);
        let worker = Arc::downgrade(&self.worker);
        let idle = self.idle_exit;
        thread::Builder::new()
            .name("heldlock-offload".into())
            .spawn(move || work::<B>(&inner, &receiver, &worker, idle))?;
        *jobs = Some(sender);
        Ok(())
    }

    /// Runs `step` on the worker and waits for its answer. `always`: run it
    /// even if this future is dropped before the worker gets to it.
    async fn run<T: Send + 'static>(
        &self,
        step: Step,
        always: bool,
        work: impl FnOnce(&B, &Waker) -> Result<T, BackendError> + Send + 'static,
    ) -> Result<T, BackendError> {
        let reply = self.start(step, always, work)?;
        match reply.await {
            Some(answer) => answer,
            None => Err(self.error(step, "run the step on the offload thread", panicked())),
        }
    }

    fn start<T: Send + 'static>(
        &self,
        step: Step,
        always: bool,
        work: impl FnOnce(&B, &Waker) -> Result<T, BackendError> + Send + 'static,
    ) -> Result<Reply<Result<T, BackendError>>, BackendError> {
        let (completer, reply) = oneshot();
        let job: Job<B> = Box::new(move |backend, waker| {
            if always || !completer.is_cancelled() {
                completer.complete(work(backend, waker));
            }
        });
        self.submit(job)
            .map_err(|error| self.error(step, "start the offload thread", error))?;
        Ok(reply)
    }

    fn error(&self, step: Step, action: &'static str, source: io::Error) -> BackendError {
        BackendError::Io {
            step,
            resource: self.inner.resource(),
            action,
            source,
        }
    }
}

fn panicked() -> io::Error {
    io::Error::other("the step panicked")
}

/// The worker thread: runs jobs until the backend is dropped, or until it
/// has been idle for `idle` and no job came in meanwhile.
fn work<B: LockBackend>(
    backend: &B,
    jobs: &mpsc::Receiver<Job<B>>,
    worker: &Weak<Worker<B>>,
    idle: Duration,
) {
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    loop {
        let job = match jobs.recv_timeout(idle) {
            Ok(job) => job,
            Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {
                let Some(worker) = worker.upgrade() else {
                    return;
                };
                // Under the lock a step is either queued already, or will
                // find no worker and start a new one.
                let mut sender = worker.jobs();
                match jobs.try_recv() {
                    Ok(job) => job,
                    Err(_) => {
                        *sender = None;
                        return;
                    }
                }
            }
        };
        // A panicking step drops its completer, which answers its caller
        // with an error; the worker goes on with the next step.
        if catch_unwind(AssertUnwindSafe(|| job(backend, &waker))).is_err() {
            tracing::error!(resource = %backend.resource(), "a lock step panicked on the offload thread");
        }
    }
}

/// Wakes a thread parked in [`block_on`] or [`Reply::wait`].
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Drives `future` to its end on the worker thread. The file system's steps
/// complete at their first poll; parking between polls keeps it correct for
/// a backend whose steps wait and wake.
fn block_on<F: Future>(future: F, waker: &Waker) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(waker);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        thread::park();
    }
}

/// One answer from the worker to one caller.
struct Slot<T> {
    state: Mutex<SlotState<T>>,
}

struct SlotState<T> {
    answer: Option<T>,
    waker: Option<Waker>,
    /// The worker dropped the job without answering (its step panicked).
    unanswered: bool,
    /// The caller stopped waiting.
    cancelled: bool,
}

impl<T> Slot<T> {
    fn state(&self) -> MutexGuard<'_, SlotState<T>> {
        // Each holder only sets fields: a panic cannot leave it half-made.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn oneshot<T>() -> (Completer<T>, Reply<T>) {
    let slot = Arc::new(Slot {
        state: Mutex::new(SlotState {
            answer: None,
            waker: None,
            unanswered: false,
            cancelled: false,
        }),
    });
    (
        Completer {
            slot: Arc::clone(&slot),
            answered: false,
        },
        Reply { slot },
    )
}

/// The worker's end of a [`Slot`].
struct Completer<T> {
    slot: Arc<Slot<T>>,
    answered: bool,
}

impl<T> Completer<T> {
    fn is_cancelled(&self) -> bool {
        self.slot.state().cancelled
    }

    fn complete(mut self, answer: T) {
        self.answered = true;
        let waker = {
            let mut state = self.slot.state();
            state.answer = Some(answer);
            state.waker.take()
        };
        // Woken outside the lock: a waker may run its task on this thread.
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Drop for Completer<T> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let waker = {
            let mut state = self.slot.state();
            state.unanswered = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The caller's end of a [`Slot`]: a future of the answer (`None`: the step
/// panicked).
struct Reply<T> {
    slot: Arc<Slot<T>>,
}

impl<T> Reply<T> {
    /// Waits on this thread, at most `timeout`: `None` when it passed.
    fn wait(self, timeout: Duration) -> Option<Option<T>> {
        let deadline = Instant::now().checked_add(timeout);
        let waker = Waker::from(Arc::new(Unpark(thread::current())));
        loop {
            {
                let mut state = self.slot.state();
                if let Some(answer) = state.answer.take() {
                    return Some(Some(answer));
                }
                if state.unanswered {
                    return Some(None);
                }
                state.waker = Some(waker.clone());
            }
            match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    thread::park_timeout(left);
                }
                None => thread::park(),
            }
        }
    }
}

impl<T> Future for Reply<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut state = self.slot.state();
        if let Some(answer) = state.answer.take() {
            return Poll::Ready(Some(answer));
        }
        if state.unanswered {
            return Poll::Ready(None);
        }
        match &mut state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            waker => *waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> Drop for Reply<T> {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.slot.state();
            state.cancelled = true;
            state.waker.take()
        };
        // Dropped outside the lock: a waker's drop may free a task.
        drop(waker);
    }
}

#[async_trait]
impl<B: LockBackend> LockBackend for Offload<B> {
    fn resource(&self) -> String {
        self.inner.resource()
    }

    async fn try_create(&self, record: &LockRecord) -> Result<Created, BackendError> {
        let record = record.clone();
        self.run(Step::Create, false, move |backend, waker| {
            block_on(backend.try_create(&record), waker)
        })
        .await
    }

    async fn inspect(&self) -> Result<Inspection, BackendError> {
        self.run(Step::Inspect, false, |backend, waker| {
            block_on(backend.inspect(), waker)
        })
        .await
    }

    async fn refresh(&self, owner: &OwnerId, now: SystemTime) -> Result<Refreshed, BackendError> {
        let owner = owner.clone();
        self.run(Step::Refresh, false, move |backend, waker| {
            block_on(backend.refresh(&owner, now), waker)
        })
        .await
    }

    async fn break_if_unchanged(&self, observed: &Observed) -> Result<Broke, BackendError> {
        let observed = observed.clone();
        self.run(Step::Break, false, move |backend, waker| {
            block_on(backend.break_if_unchanged(&observed), waker)
        })
        .await
    }

    async fn release(&self, owner: &OwnerId) -> Result<Released, BackendError> {
        let owner = owner.clone();
        self.run(Step::Release, true, move |backend, waker| {
            block_on(backend.release(&owner), waker)
        })
        .await
    }

    /// The release, run on the worker; this thread waits for it at most
    /// [`drop_wait`](Self::drop_wait), and the release completes on the
    /// worker also when the wait gives up.
    fn release_blocking(&self, owner: &OwnerId) -> Option<Result<Released, BackendError>> {
        let owner = owner.clone();
        let reply = match self.start(Step::Release, true, move |backend, waker| {
            block_on(backend.release(&owner), waker)
        }) {
            Ok(reply) => reply,
            Err(error) => return Some(Err(error)),
        };
        Some(match reply.wait(self.drop_wait) {
            Some(Some(answer)) => answer,
            Some(None) => Err(self.error(
                Step::Release,
                "run the step on the offload thread",
                panicked(),
            )),
            None => Err(self.error(
                Step::Release,
                "wait for the offload thread",
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no answer within {:?}; the release goes on in the background",
                        self.drop_wait
                    ),
                ),
            )),
        })
    }

    fn listen(&self) -> Option<ChangeListener> {
        let reply = self
            .start(Step::Inspect, false, |backend, _| Ok(backend.listen()))
            .ok()?;
        Some(Box::pin(async move {
            match reply.await {
                Some(Ok(Some(listener))) => listener.await,
                // `B` cannot notify, or the subscription failed: only the
                // waiter's poll wakes it.
                _ => std::future::pending().await,
            }
        }))
    }
}

impl<B: LockBackend> fmt::Debug for Offload<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Offload")
            .field("inner", &self.inner)
            .field("worker_running", &self.worker.jobs().is_some())
            .field("idle_exit", &self.idle_exit)
            .field("drop_wait", &self.drop_wait)
            .finish()
    }
}
