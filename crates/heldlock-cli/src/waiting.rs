//! Waiting for the lock: the acquire future raced against signals and, on
//! a terminal, a spinner that shows who holds the lock and for how long.

use std::io::IsTerminal;
use std::pin::pin;
use std::time::{Duration, SystemTime};

use heldlock::{HeldLock, Inspection, Lock};
use indicatif::{ProgressBar, ProgressStyle};
use rustix::process::Signal;

use crate::duration::show;
use crate::holder::View;
use crate::signals::Signals;

/// How long a wait lasts before the spinner appears: a lock had at once, or
/// within a blink, shows nothing.
const SPINNER_DELAY: Duration = Duration::from_millis(200);

/// How often the spinner looks at the lock to update its line.
const SPINNER_REFRESH: Duration = Duration::from_millis(200);

/// How waiting for the lock ended.
#[derive(Debug)]
pub(crate) enum Waited {
    /// We hold the lock.
    Held(HeldLock),
    /// Somebody else held it for the whole wait; a one-line message naming
    /// the holder.
    Busy(String),
    /// The lock library failed.
    Failed(heldlock::Error),
    /// A signal arrived first.
    Interrupted(Signal),
}

/// What to wait for and how.
#[derive(Debug)]
pub(crate) struct Wait<'a> {
    /// The lock (a `FileLock`'s or an `EtcdLock`'s).
    pub(crate) lock: &'a Lock,
    /// The lock as given, for messages.
    pub(crate) shown: &'a str,
    /// Whether it is an etcd lock (see [`View::leased`]).
    pub(crate) leased: bool,
    /// The stale option, for messages.
    pub(crate) stale: Duration,
    /// `None`: try once (`--no-wait`); else the longest wait.
    pub(crate) wait: Option<Duration>,
}

/// Acquires the lock, or reports why not.
pub(crate) async fn acquire(wait: &Wait<'_>, signals: &mut Signals) -> Waited {
    let Some(max_wait) = wait.wait else {
        let attempt = tokio::select! {
            attempt = wait.lock.try_acquire() => attempt,
            signal = signals.interruption() => return Waited::Interrupted(signal),
        };
        return match attempt {
            Ok(Some(held)) => Waited::Held(held),
            Ok(None) => Waited::Busy(busy_message(wait, None, "gave up at once (--no-wait)").await),
            Err(error) => Waited::Failed(error),
        };
    };
    let on_terminal = std::io::stderr().is_terminal();
    let result = race(wait, signals, on_terminal).await;
    match result {
        Ok(Ok(held)) => Waited::Held(held),
        Ok(Err(heldlock::Error::Timeout { holder, .. })) => {
            let gave_up = format!("gave up after waiting {}", show(max_wait));
            Waited::Busy(busy_message(wait, holder.as_ref(), &gave_up).await)
        }
        Ok(Err(error)) => Waited::Failed(error),
        Err(signal) => Waited::Interrupted(signal),
    }
}

/// Runs `acquire()` to its end, with a spinner on a terminal once the wait
/// has lasted [`SPINNER_DELAY`] (a lock had at once, or soon, shows none);
/// `Err` when a signal came first.
async fn race(
    wait: &Wait<'_>,
    signals: &mut Signals,
    on_terminal: bool,
) -> Result<Result<HeldLock, heldlock::Error>, Signal> {
    let mut acquire = pin!(wait.lock.acquire());
    let mut appear = pin!(tokio::time::sleep(SPINNER_DELAY));
    let mut spinner: Option<Spinner> = None;
    let mut ticks = tokio::time::interval(SPINNER_REFRESH);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        tokio::select! {
            biased;
            result = &mut acquire => break Ok(result),
            signal = signals.interruption() => break Err(signal),
            () = &mut appear, if on_terminal && spinner.is_none() => {
                spinner = Some(Spinner::start(wait.shown, wait.stale, wait.leased));
            }
            _ = ticks.tick(), if spinner.is_some() => {
                if let Some(spinner) = &spinner {
                    spinner.update(wait.lock.inspect().await);
                }
            }
        }
    };
    if let Some(spinner) = spinner {
        spinner.finish();
    }
    result
}

/// The one-line message for a busy lock: who holds it and for how long,
/// from a fresh look at the lock (the holder from the timeout when the lock
/// has just been freed).
async fn busy_message(
    wait: &Wait<'_>,
    last_seen: Option<&heldlock::Holder>,
    gave_up: &str,
) -> String {
    let lock = wait.shown;
    match wait.lock.inspect().await {
        Ok(Inspection::Present(observed)) => {
            let view = View::new(&observed, SystemTime::now()).leased(wait.leased);
            format!(
                "lock {lock} is held by {}; {gave_up}",
                view.held_for(wait.stale)
            )
        }
        _ => match last_seen {
            Some(holder) => {
                format!("lock {lock} was held by {holder} (free again just now); {gave_up}")
            }
            None => format!("lock {lock} was busy (free again just now); {gave_up}"),
        },
    }
}

/// The spinner line shown on a terminal while waiting.
#[derive(Debug)]
struct Spinner {
    bar: ProgressBar,
    shown: String,
    stale: Duration,
    leased: bool,
}

impl Spinner {
    fn start(shown: &str, stale: Duration, leased: bool) -> Self {
        let bar = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
            bar.set_style(style);
        }
        let shown = shown.to_owned();
        bar.set_message(format!("waiting for {shown}"));
        bar.enable_steady_tick(Duration::from_millis(100));
        crate::logs::spinner_shown(Some(&bar));
        Spinner {
            bar,
            shown,
            stale,
            leased,
        }
    }

    fn update(&self, inspection: Result<Inspection, heldlock::Error>) {
        let message = match inspection {
            Ok(Inspection::Present(observed)) => {
                let view = View::new(&observed, SystemTime::now()).leased(self.leased);
                format!(
                    "waiting for {}: held by {}",
                    self.shown,
                    view.held_for(self.stale)
                )
            }
            Ok(_) => format!("waiting for {}: changing hands", self.shown),
            Err(_) => format!("waiting for {}", self.shown),
        };
        self.bar.set_message(message);
    }

    fn finish(self) {
        crate::logs::spinner_shown(None);
        self.bar.finish_and_clear();
    }
}
