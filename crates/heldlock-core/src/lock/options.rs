//! The timings of a held lock, validated, and its warning hook.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

/// The longest duration any option accepts: one year. Longer values are
/// almost certainly unit mistakes, and refusing them keeps every deadline
/// computation (`Instant + Duration`) far from overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Default of [`LockOptions::max_wait`].
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(5);
/// Default of [`LockOptions::poll`].
pub const DEFAULT_POLL: Duration = Duration::from_millis(50);
/// Floor of the default [`LockOptions::heartbeat`].
pub const MIN_DEFAULT_HEARTBEAT: Duration = Duration::from_millis(100);
/// Default of [`LockOptions::max_declared_stale`].
pub const DEFAULT_MAX_DECLARED_STALE: Duration = Duration::from_secs(60 * 60);

/// How a held lock behaves: when it is stale, how long to wait for it, how
/// often to poll and to heartbeat.
///
/// Built with setters and checked when a lock is made from it (or by
/// [`validate`](Self::validate)); nothing is checked before.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use heldlock_core::LockOptions;
///
/// let options = LockOptions::new(Duration::from_secs(30))
///     .max_wait(Duration::from_secs(5))
///     .poll(Duration::from_millis(50));
/// let timing = options.validate()?;
/// assert_eq!(timing.heartbeat, Duration::from_secs(10)); // stale / 3
/// # Ok::<(), heldlock_core::OptionsError>(())
/// ```
#[derive(Clone)]
pub struct LockOptions {
    stale: Duration,
    max_wait: Duration,
    poll: Duration,
    heartbeat: Option<Duration>,
    max_clock_skew: Duration,
    wall_clock_rule: bool,
    max_declared_stale: Duration,
    bounded_wait: Option<Duration>,
    on_warning: Option<WarningHook>,
}

/// A callback for non-fatal warnings; see [`LockOptions::on_warning`].
pub type WarningHook = Arc<dyn Fn(&Warning) + Send + Sync>;

impl LockOptions {
    /// Options for a lock that is judged stale (its holder presumed dead) once
    /// it has not been refreshed for `stale`.
    ///
    /// There is no default: the right value is longer than the longest pause
    /// a live holder can suffer (see `docs/safety.md`), and short enough that
    /// a crashed holder does not block others for long.
    pub fn new(stale: Duration) -> Self {
        LockOptions {
            stale,
            max_wait: DEFAULT_MAX_WAIT,
            poll: DEFAULT_POLL,
            heartbeat: None,
            max_clock_skew: Duration::ZERO,
            wall_clock_rule: true,
            max_declared_stale: DEFAULT_MAX_DECLARED_STALE,
            bounded_wait: None,
            on_warning: None,
        }
    }

    /// How long `acquire` waits for a busy lock before it gives up (default 5 s).
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// How often a waiter looks at a busy lock again (default 50 ms). A sleep
    /// never runs past the deadline of `max_wait`.
    pub fn poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// How often a holder refreshes its lock (default `max(100 ms, stale / 3)`,
    /// or `stale / 3` when that floor would reach `stale`). Must be shorter
    /// than `stale`.
    pub fn heartbeat(mut self, heartbeat: Duration) -> Self {
        self.heartbeat = Some(heartbeat);
        self
    }

    /// How far the wall clocks of the hosts sharing the lock may disagree
    /// (default zero, right when every contender runs on one host). A stamp is
    /// judged stale by the wall clock only once it is older than
    /// `stale + max_clock_skew`.
    pub fn max_clock_skew(mut self, skew: Duration) -> Self {
        self.max_clock_skew = skew;
        self
    }

    /// Whether a lock may be judged stale by comparing its stamp with our wall
    /// clock (default `true`).
    ///
    /// The other rule always applies: a lock whose identity and stamp stayed
    /// unchanged for `stale` of our own monotonic time is stale. That rule
    /// cannot be fooled by clock skew or clock steps, but a waiter that starts
    /// waiting needs a full `stale` to apply it. Turn the wall-clock rule off
    /// on network file systems whose hosts' clocks are not kept in step.
    pub fn wall_clock_rule(mut self, enabled: bool) -> Self {
        self.wall_clock_rule = enabled;
        self
    }

    /// The longest stale age a holder may declare in its record and have
    /// this contender honour (default one hour).
    ///
    /// Every record a holder writes declares its own `stale` (the field
    /// `stale_ms`), and a contender judges a lock stale only after the
    /// longer of its own `stale` and the declared one: a contender
    /// configured with a shorter age never breaks a live holder between two
    /// of its heartbeats. A declared age above this cap counts as the cap,
    /// so a corrupt or hostile record cannot keep a dead holder's lock for
    /// ever. Set it at least as long as the longest `stale` any holder of
    /// the lock uses.
    pub fn max_declared_stale(mut self, cap: Duration) -> Self {
        self.max_declared_stale = cap;
        self
    }

    /// Bounded waiting (off by default): a waiter that has watched the lock
    /// for longer than `bound` without getting it asks the acquirers of its
    /// host to let it go first.
    ///
    /// Without it, a process that releases a contended lock and asks for it
    /// again usually gets it straight back, before the waiter that the
    /// release woke can try (a hand-off across processes costs a wake-up);
    /// that is the fastest order, but a waiter's wait is then bounded only
    /// by chance. With it, the waiter next in line that has watched for
    /// `bound` leaves a mark, and every acquirer of the same host with
    /// bounded waiting on, before its first try, queues behind it instead
    /// (for at most `poll`, never past its `max_wait`): the next release
    /// goes to the waiter. A shorter bound trades throughput for a shorter
    /// tail; `docs/benchmarks.md` measures both modes.
    ///
    /// It is a courtesy among the processes of one host that all turn it
    /// on, not a rule of the lock: processes without it, on other hosts or
    /// on a network file system do not take part, and whoever tries may
    /// still take the lock, so exclusion never depends on it. Backends
    /// without a queue of waiters (the memory backend, etcd) ignore it.
    pub fn bounded_wait(mut self, bound: Duration) -> Self {
        self.bounded_wait = Some(bound);
        self
    }

    /// Calls `hook` with every non-fatal warning (a failed heartbeat, a lost
    /// lock, a release that found a replacement). Warnings also go to
    /// `tracing` as `WARN` events (a loss as `lost the lock`, with `owner`
    /// and `reason` fields). A hook that panics is caught and ignored.
    pub fn on_warning(mut self, hook: impl Fn(&Warning) + Send + Sync + 'static) -> Self {
        self.on_warning = Some(Arc::new(hook));
        self
    }

    /// The warning hook, if one was set.
    pub fn warning_hook(&self) -> Option<&WarningHook> {
        self.on_warning.as_ref()
    }

    /// Checks every option and returns the resulting timings.
    ///
    /// # Errors
    ///
    /// [`OptionsError`] naming the option, its valid range, the value given
    /// and its default, when a duration is zero or above [`MAX_DURATION`], or
    /// when `heartbeat` is not shorter than `stale`.
    pub fn validate(&self) -> Result<Timing, OptionsError> {
        let range = |option, value: Duration, default: Option<Duration>| {
            if value.is_zero() || value > MAX_DURATION {
                Err(OptionsError::OutOfRange {
                    option,
                    value,
                    default,
                })
            } else {
                Ok(value)
            }
        };
        let stale = range("stale", self.stale, None)?;
        let max_wait = range("max_wait", self.max_wait, Some(DEFAULT_MAX_WAIT))?;
        let poll = range("poll", self.poll, Some(DEFAULT_POLL))?;
        let default_heartbeat = default_heartbeat(stale);
        let heartbeat = match self.heartbeat {
            None => default_heartbeat,
            Some(heartbeat) => {
                let heartbeat = range("heartbeat", heartbeat, Some(default_heartbeat))?;
                if heartbeat >= stale {
                    return Err(OptionsError::HeartbeatNotBelowStale {
                        heartbeat,
                        stale,
                        default: default_heartbeat,
                    });
                }
                heartbeat
            }
        };
        if self.max_clock_skew > MAX_DURATION {
            return Err(OptionsError::OutOfRange {
                option: "max_clock_skew",
                value: self.max_clock_skew,
                default: Some(Duration::ZERO),
            });
        }
        let max_declared_stale = range(
            "max_declared_stale",
            self.max_declared_stale,
            Some(DEFAULT_MAX_DECLARED_STALE),
        )?;
        let bounded_wait = match self.bounded_wait {
            Some(bound) if bound > MAX_DURATION => {
                return Err(OptionsError::OutOfRange {
                    option: "bounded_wait",
                    value: bound,
                    default: None,
                });
            }
            other => other,
        };
        Ok(Timing {
            stale,
            max_wait,
            poll,
            heartbeat,
            max_clock_skew: self.max_clock_skew,
            wall_clock_rule: self.wall_clock_rule,
            max_declared_stale,
            bounded_wait,
        })
    }

    /// Reports `warning` to `tracing` and to the hook, never failing.
    pub(crate) fn warn(&self, warning: Warning) {
        tracing::warn!(resource = %warning.resource, "{}", warning.message);
        self.call_hook(&warning);
    }

    /// Gives `warning` to the hook alone, never failing: for a warning
    /// already reported to `tracing` as an event of its own.
    pub(crate) fn call_hook(&self, warning: &Warning) {
        if let Some(hook) = &self.on_warning {
            // A broken hook must never break the guarded operation.
            let _ = catch_unwind(AssertUnwindSafe(|| hook(warning)));
        }
    }
}

fn default_heartbeat(stale: Duration) -> Duration {
    let third = stale / 3;
    if MIN_DEFAULT_HEARTBEAT < stale {
        third.max(MIN_DEFAULT_HEARTBEAT).min(stale / 2)
    } else {
        third
    }
}

impl fmt::Debug for LockOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockOptions")
            .field("stale", &self.stale)
            .field("max_wait", &self.max_wait)
            .field("poll", &self.poll)
            .field("heartbeat", &self.heartbeat)
            .field("max_clock_skew", &self.max_clock_skew)
            .field("wall_clock_rule", &self.wall_clock_rule)
            .field("max_declared_stale", &self.max_declared_stale)
            .field("bounded_wait", &self.bounded_wait)
            .field("on_warning", &self.on_warning.is_some())
            .finish()
    }
}

/// Validated timings of a lock; made by [`LockOptions::validate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timing {
    /// A lock not refreshed for this long is stale.
    pub stale: Duration,
    /// How long to wait for a busy lock.
    pub max_wait: Duration,
    /// How often to look at a busy lock again.
    pub poll: Duration,
    /// How often a holder refreshes its lock.
    pub heartbeat: Duration,
    /// Allowed disagreement of wall clocks.
    pub max_clock_skew: Duration,
    /// Whether stamps are compared with our wall clock.
    pub wall_clock_rule: bool,
    /// The longest stale age honoured when a holder declares one.
    pub max_declared_stale: Duration,
    /// How long the waiter next in line may watch before the acquirers of
    /// its host let it go first; `None`: no bounded waiting. See
    /// [`LockOptions::bounded_wait`].
    pub bounded_wait: Option<Duration>,
}

impl Timing {
    /// The stale age to judge `observed` by: the longer of ours and the one
    /// its holder declared (capped at [`max_declared_stale`](Self::max_declared_stale)).
    /// A record without a declaration (the reference's) is judged by ours.
    pub fn stale_for(&self, observed: &super::record::Observed) -> Duration {
        observed
            .holder
            .record()
            .and_then(super::record::LockRecord::declared_stale)
            .map_or(self.stale, |declared| {
                self.stale.max(declared.min(self.max_declared_stale))
            })
    }
}

/// An option was given a value it cannot take.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OptionsError {
    /// A duration outside `(0, MAX_DURATION]`.
    #[error(
        "lock option `{option}` must be more than 0 and at most 365 days; got {value:?}. {}",
        default_advice(*default)
    )]
    OutOfRange {
        /// The option's name.
        option: &'static str,
        /// The value given.
        value: Duration,
        /// Its default, if it has one.
        default: Option<Duration>,
    },
    /// `heartbeat` must be shorter than `stale`, or the holder's own lock would
    /// go stale between two heartbeats.
    #[error(
        "lock option `heartbeat` must be shorter than `stale` ({stale:?}); got {heartbeat:?}. Omit it to use the default of {default:?} for this `stale`"
    )]
    HeartbeatNotBelowStale {
        /// The heartbeat given.
        heartbeat: Duration,
        /// The stale given.
        stale: Duration,
        /// The default heartbeat for this stale.
        default: Duration,
    },
}

fn default_advice(default: Option<Duration>) -> String {
    match default {
        Some(default) => format!("Omit it to use the default of {default:?}"),
        None => "It has no default: choose one longer than the longest pause of a live holder"
            .to_string(),
    }
}

/// A non-fatal event of a held lock, given to [`LockOptions::on_warning`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Warning {
    /// The lock resource.
    pub resource: String,
    /// What happened.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lock {}: {}", self.resource, self.message)
    }
}
