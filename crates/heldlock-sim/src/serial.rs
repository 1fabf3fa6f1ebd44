//! The core [`Serializer`] under the seeded scheduler, with cancellation at
//! every scheduling point.
//!
//! Callers call `serialize(key, task)` (taking their place in the queue at
//! call time), hit a scheduling point before they first poll the returned
//! future, then await it; tasks sleep and yield. At every step the seed may
//! drop any caller (waiting, granted but not yet polled, or running). The
//! checks: tasks of one key never overlap; a task starts only when every
//! earlier call on its key has finished or was cancelled (FIFO by call
//! order); a task, with what it captured, is dropped before its key passes
//! on, whether it ran, finished or never started; when nothing can run any
//! more, every caller that was not cancelled has finished (no lost
//! wake-up); and the serializer keeps no key (no retained key).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use heldlock_core::Serializer;

use crate::campaign::{CampaignReport, run_seeds};
use crate::check::{Class, Invariant, Violation};
use crate::executor::Executor;
use crate::rng::SplitMix64;
use crate::sim::RunReport;
use crate::tape::Decisions;
use crate::world::World;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    NotCalled,
    Waiting,
    Running,
    Done,
    Cancelled,
}

#[derive(Debug)]
struct Caller {
    key: u8,
    /// Position in the call order of its key.
    ticket: Option<u64>,
    phase: Phase,
}

#[derive(Debug, Default)]
struct Log {
    callers: Vec<Caller>,
    tickets: BTreeMap<u8, u64>,
    violations: Vec<Violation>,
    lines: Vec<String>,
    trace: bool,
    step: u64,
    now: Duration,
}

impl Log {
    fn violation(&mut self, invariant: Invariant, text: String) {
        let (step, at) = (self.step, self.now);
        if self.trace {
            self.lines.push(format!(
                "{step:>6} {:>9.3}s check  {text}",
                at.as_secs_f64()
            ));
        }
        self.violations.push(Violation {
            invariant,
            class: Class::Real,
            step,
            at,
            text,
        });
    }

    fn note(&mut self, who: usize, what: &str) {
        if self.trace {
            let line = format!(
                "{:>6} {:>9.3}s s{who:<5} {what}",
                self.step,
                self.now.as_secs_f64()
            );
            self.lines.push(line);
        }
    }

    fn called(&mut self, id: usize) {
        let key = self.callers[id].key;
        let ticket = self.tickets.entry(key).or_default();
        *ticket += 1;
        let ticket = *ticket;
        self.callers[id].ticket = Some(ticket);
        self.callers[id].phase = Phase::Waiting;
        self.note(id, &format!("calls serialize(key {key}) as #{ticket}"));
    }

    fn started(&mut self, id: usize) {
        let key = self.callers[id].key;
        let ticket = self.callers[id].ticket.unwrap_or(0);
        let mut problems = Vec::new();
        for (other, c) in self.callers.iter().enumerate() {
            if other == id || c.key != key {
                continue;
            }
            if c.phase == Phase::Running {
                problems.push((
                    Invariant::SerializerOrder,
                    format!("s{id} starts on key {key} while s{other} is running on it"),
                ));
            }
            if c.phase == Phase::Waiting && c.ticket.is_some_and(|t| t < ticket) {
                problems.push((
                    Invariant::SerializerOrder,
                    format!(
                        "s{id} (#{ticket}) starts on key {key} before s{other} (#{}), called earlier and still waiting",
                        c.ticket.unwrap_or(0)
                    ),
                ));
            }
        }
        self.callers[id].phase = Phase::Running;
        self.note(id, &format!("starts its task on key {key}"));
        for (invariant, text) in problems {
            self.violation(invariant, text);
        }
    }

    fn ended(&mut self, id: usize, phase: Phase) {
        self.callers[id].phase = phase;
        let what = if phase == Phase::Done {
            "finishes"
        } else {
            "is cancelled"
        };
        self.note(id, what);
    }
}

struct Shared(Mutex<Log>);

impl Shared {
    fn log(&self) -> MutexGuard<'_, Log> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Marks its caller's task ended (done or cancelled while running) on drop.
struct Running {
    shared: Arc<Shared>,
    id: usize,
    done: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        let phase = if self.done {
            Phase::Done
        } else {
            Phase::Cancelled
        };
        self.shared.log().ended(self.id, phase);
    }
}

/// Captured by each task: its drop checks that the key is not idle, since
/// the task's own ticket is outstanding until the task is dropped. A
/// serializer that passes the key on before it drops the task (its
/// captured values included) lets this find the key free when the call was
/// its last.
struct Captured {
    shared: Arc<Shared>,
    serializer: Serializer<u8>,
    key: u8,
    id: usize,
}

impl Drop for Captured {
    fn drop(&mut self) {
        if let Some(guard) = self.serializer.try_lock(self.key) {
            drop(guard);
            let (id, key) = (self.id, self.key);
            self.shared.log().violation(
                Invariant::SerializerOrder,
                format!(
                    "s{id}'s task was dropped after its key {key} passed on (the key was idle)"
                ),
            );
        }
    }
}

/// Marks its caller cancelled if dropped while waiting.
struct Waiting {
    shared: Arc<Shared>,
    id: usize,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut log = self.shared.log();
        if log.callers[self.id].phase == Phase::Waiting {
            log.ended(self.id, Phase::Cancelled);
        }
    }
}

async fn caller(
    world: Arc<World>,
    shared: Arc<Shared>,
    serializer: Serializer<u8>,
    id: usize,
    start: Duration,
    work: Vec<Duration>,
) {
    if !start.is_zero() {
        world.sleep(start).await;
    }
    let key = shared.log().callers[id].key;
    let task = {
        let (world, shared) = (Arc::clone(&world), Arc::clone(&shared));
        let captured = Captured {
            shared: Arc::clone(&shared),
            serializer: serializer.clone(),
            key,
            id,
        };
        async move {
            let _captured = captured;
            shared.log().started(id);
            let mut running = Running {
                shared: Arc::clone(&shared),
                id,
                done: false,
            };
            for pause in work {
                if pause.is_zero() {
                    world.yield_now().await;
                } else {
                    world.sleep(pause).await;
                }
            }
            running.done = true;
        }
    };
    let turn = serializer.serialize(key, task);
    shared.log().called(id);
    let waiting = Waiting {
        shared: Arc::clone(&shared),
        id,
    };
    // A scheduling point between the call and the first poll: the ticket
    // was taken at the call.
    world.yield_now().await;
    turn.await;
    drop(waiting);
}

/// Runs one seed of the serializer scenario.
pub fn run_serializer(seed: u64, trace: bool) -> RunReport {
    let mut rng = SplitMix64::new(seed ^ 0x5E71_A112_E500_0000);
    let keys = rng.range(1, 3) as u8;
    let callers = rng.range(2, 8) as usize;
    let cancel_ppm = if rng.chance(700_000) { 40_000 } else { 0 };
    let world = World::new(
        Decisions::seeded(SplitMix64::new(seed), false),
        0,
        "/serializer".into(),
        false,
    );
    let shared = Arc::new(Shared(Mutex::new(Log {
        trace,
        ..Log::default()
    })));
    let serializer = Serializer::<u8>::new();
    let mut exec = Executor::new();
    let mut tasks = Vec::new();
    for id in 0..callers {
        let key = rng.below(u64::from(keys)) as u8;
        shared.log().callers.push(Caller {
            key,
            ticket: None,
            phase: Phase::NotCalled,
        });
        let start = if rng.chance(500_000) {
            Duration::ZERO
        } else {
            Duration::from_millis(rng.range(1, 30))
        };
        let work = (0..rng.range(0, 3))
            .map(|_| Duration::from_millis(rng.range(0, 20)))
            .collect();
        let future = caller(
            Arc::clone(&world),
            Arc::clone(&shared),
            serializer.clone(),
            id,
            start,
            work,
        );
        tasks.push(exec.spawn(None, "caller", Box::pin(future)));
    }
    let mut steps = 0;
    let mut cancelled = 0;
    loop {
        let runnable = exec.runnable(|_| true);
        if runnable.is_empty() {
            if exec.is_empty() {
                break;
            }
            let next = world.lock().next_timer();
            match next {
                Some(at) => {
                    world.advance_to(at);
                    continue;
                }
                None => break,
            }
        }
        steps += 1;
        {
            let mut log = shared.log();
            log.step = steps;
            log.now = world.lock().now;
        }
        if cancel_ppm > 0 && rng.chance(cancel_ppm) {
            let live = exec.ids();
            if !live.is_empty() {
                let victim = live[rng.below(live.len() as u64) as usize];
                let id = tasks.iter().position(|&t| t == victim).unwrap_or(0);
                shared.log().note(id, "CANCEL: its future is dropped");
                cancelled += 1;
                drop(exec.cancel(victim));
                let mut log = shared.log();
                if log.callers[id].phase == Phase::NotCalled {
                    log.callers[id].phase = Phase::Cancelled;
                }
                continue;
            }
        }
        let pick = runnable[rng.below(runnable.len() as u64) as usize];
        exec.poll(pick, &world);
    }
    let mut log = shared.log();
    let stuck: Vec<usize> = log
        .callers
        .iter()
        .enumerate()
        .filter(|(_, c)| !matches!(c.phase, Phase::Done | Phase::Cancelled))
        .map(|(id, _)| id)
        .collect();
    if !stuck.is_empty() {
        let text = format!(
            "nothing can run, but callers {stuck:?} neither finished nor were cancelled (a lost wake-up)"
        );
        log.violation(Invariant::SerializerProgress, text);
    }
    drop(log);
    exec.clear();
    let mut log = shared.log();
    let pending = serializer.pending_keys();
    if pending != 0 {
        log.violation(
            Invariant::SerializerProgress,
            format!("every caller is gone, but the serializer still keeps {pending} key(s)"),
        );
    }
    let mut counters = BTreeMap::new();
    counters.insert("serializer.callers".to_owned(), callers as u64);
    counters.insert("serializer.cancelled".to_owned(), cancelled);
    let finished = log
        .callers
        .iter()
        .filter(|c| c.phase == Phase::Done)
        .count();
    counters.insert("serializer.finished".to_owned(), finished as u64);
    let elapsed = world.lock().now;
    RunReport {
        seed,
        profile: format!(
            "{callers} callers on {keys} key(s), cancellation {}",
            cancel_ppm > 0
        ),
        steps,
        elapsed,
        violations: std::mem::take(&mut log.violations),
        counters,
        trace: std::mem::take(&mut log.lines),
        tape: None,
    }
}

/// Runs seeds `first .. first + seeds` of the serializer scenario.
pub fn run_serializer_campaign(first: u64, seeds: u64) -> CampaignReport {
    run_seeds(first, seeds, 1, |seed| run_serializer(seed, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(keys: &[u8]) -> Log {
        Log {
            callers: keys
                .iter()
                .map(|&key| Caller {
                    key,
                    ticket: None,
                    phase: Phase::NotCalled,
                })
                .collect(),
            ..Log::default()
        }
    }

    #[test]
    fn the_order_checks_can_fail() {
        let mut log = log(&[0, 0, 1]);
        log.called(0);
        log.called(1);
        log.called(2);
        log.started(2); // another key: fine
        assert!(log.violations.is_empty());
        log.started(1); // #2 before #1, which still waits
        assert_eq!(log.violations.len(), 1);
        log.started(0); // while #2 runs
        assert_eq!(log.violations.len(), 2);
        assert!(
            log.violations
                .iter()
                .all(|v| v.invariant == Invariant::SerializerOrder)
        );
    }
}
