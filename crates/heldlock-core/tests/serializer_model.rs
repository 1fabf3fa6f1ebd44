//! Property test: random programs over a few keys and three handles (clones)
//! of one `Serializer`, interleaving `serialize` tasks (which finish, fail,
//! panic or are cancelled), `lock` turns and the guards they resolve to,
//! and `try_lock`, run on a deterministic single-threaded executor that polls
//! only tasks that were woken. Checked after every step and at the end:
//!
//! * at most one task per key is inside its critical section (a running
//!   `serialize` task, or a live guard);
//! * the tasks of a key enter their critical sections in call order, across
//!   handles and across `serialize`, `lock` and `try_lock`;
//! * `try_lock(key)` succeeds exactly when no call on `key` is still live
//!   (queued, granted, or holding), and `pending_keys()` counts exactly the
//!   keys with a live call;
//! * once every gate is opened and every guard dropped, every surviving task
//!   completes by being woken (a lost wake-up would leave it pending
//!   forever), and `pending_keys() == 0` at the end.
//!
//! `serializer_threads.rs` runs submitters on real threads.

#![allow(clippy::unwrap_used)]

use std::cell::RefCell;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures::channel::oneshot;
use heldlock_core::{KeyGuard, Serializer, Turn};
use proptest::prelude::*;

const KEYS: u8 = 3;
const HANDLES: usize = 3;

#[derive(Clone, Copy, Debug)]
enum Command {
    Finish,
    Fail,
    Panic,
}

#[derive(Clone, Debug)]
enum Op {
    /// `serialize` a task on a key through a handle (the ticket is taken now).
    Submit(usize, u8),
    /// `lock` a key through a handle: a turn, then a guard held until opened.
    Lock(usize, u8),
    /// `try_lock` a key through a handle; a guard it returns is held until
    /// opened.
    TryLock(usize, u8),
    /// Poll the n-th (modulo) woken task.
    Poll(usize),
    /// Let the n-th (modulo) task leave its critical section this way (a
    /// guard is dropped, whatever the command).
    Open(usize, Command),
    /// Drop the n-th (modulo) live task: its future, turn or guard.
    Cancel(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let handle = 0..HANDLES;
    prop_oneof![
        3 => (handle.clone(), 0..KEYS).prop_map(|(h, k)| Op::Submit(h, k)),
        2 => (handle.clone(), 0..KEYS).prop_map(|(h, k)| Op::Lock(h, k)),
        1 => (handle, 0..KEYS).prop_map(|(h, k)| Op::TryLock(h, k)),
        6 => any::<usize>().prop_map(Op::Poll),
        3 => (any::<usize>(), prop_oneof![
            3 => Just(Command::Finish),
            1 => Just(Command::Fail),
            1 => Just(Command::Panic),
        ]).prop_map(|(n, c)| Op::Open(n, c)),
        1 => any::<usize>().prop_map(Op::Cancel),
    ]
}

struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[derive(Default)]
struct Observed {
    inside: [usize; KEYS as usize],
    overlap: bool,
    entered: Vec<Vec<usize>>,
}

impl Observed {
    fn enter(observed: &Rc<RefCell<Observed>>, key: u8, id: usize) -> Inside {
        let key = usize::from(key);
        let mut o = observed.borrow_mut();
        o.inside[key] += 1;
        o.overlap |= o.inside[key] > 1;
        o.entered[key].push(id);
        Inside {
            key,
            observed: Rc::clone(observed),
        }
    }
}

/// Leaves the critical section on drop, so panics and cancellations count.
struct Inside {
    key: usize,
    observed: Rc<RefCell<Observed>>,
}

impl Drop for Inside {
    fn drop(&mut self) {
        self.observed.borrow_mut().inside[self.key] -= 1;
    }
}

type TaskFuture = Pin<Box<dyn Future<Output = Result<(), ()>>>>;

/// A guard and the critical section it stands for; the section is left
/// before the key passes on.
struct Held {
    _inside: Inside,
    _guard: KeyGuard<u8>,
}

enum Call {
    /// `serialize`: its future, and the gate that ends its task.
    Serialize {
        future: Option<TaskFuture>,
        gate: Option<oneshot::Sender<Command>>,
    },
    /// `lock` or `try_lock`: the turn until it resolves, then the guard.
    Lock {
        turn: Option<Turn<u8>>,
        held: Option<Held>,
    },
}

struct Task {
    key: u8,
    call: Call,
    woken: Arc<Flag>,
}

impl Task {
    /// Queued, granted or holding: the serializer must still know the key.
    fn live(&self) -> bool {
        match &self.call {
            Call::Serialize { future, .. } => future.is_some(),
            Call::Lock { turn, held } => turn.is_some() || held.is_some(),
        }
    }

    /// Waiting to be polled: a live future or turn that was woken.
    fn pollable(&self) -> bool {
        let waiting = match &self.call {
            Call::Serialize { future, .. } => future.is_some(),
            Call::Lock { turn, .. } => turn.is_some(),
        };
        waiting && self.woken.0.load(Ordering::SeqCst)
    }
}

struct World {
    handles: Vec<Serializer<u8>>,
    observed: Rc<RefCell<Observed>>,
    tasks: Vec<Task>,
}

impl World {
    fn new() -> Self {
        let serializer = Serializer::new();
        World {
            handles: vec![serializer; HANDLES],
            observed: Rc::new(RefCell::new(Observed {
                entered: vec![Vec::new(); KEYS as usize],
                ..Observed::default()
            })),
            tasks: Vec::new(),
        }
    }

    fn push(&mut self, key: u8, call: Call) {
        self.tasks.push(Task {
            key,
            call,
            woken: Arc::new(Flag(AtomicBool::new(true))),
        });
    }

    fn submit(&mut self, handle: usize, key: u8) {
        let id = self.tasks.len();
        let (gate, commands) = oneshot::channel();
        let observed = Rc::clone(&self.observed);
        let future = self.handles[handle].serialize(key, async move {
            let _inside = Observed::enter(&observed, key, id);
            match commands.await {
                Ok(Command::Finish) | Err(_) => Ok(()),
                Ok(Command::Fail) => Err(()),
                Ok(Command::Panic) => panic!("task {id} panicked on purpose"),
            }
        });
        let call = Call::Serialize {
            future: Some(Box::pin(future)),
            gate: Some(gate),
        };
        self.push(key, call);
    }

    fn lock(&mut self, handle: usize, key: u8) {
        let turn = self.handles[handle].lock(key);
        let call = Call::Lock {
            turn: Some(turn),
            held: None,
        };
        self.push(key, call);
    }

    /// Whether some call on `key` is still live: what `try_lock` must see.
    fn busy(&self, key: u8) -> bool {
        self.tasks.iter().any(|t| t.key == key && t.live())
    }

    fn try_lock(&mut self, handle: usize, key: u8) -> Result<(), TestCaseError> {
        let busy = self.busy(key);
        let Some(guard) = self.handles[handle].try_lock(key) else {
            prop_assert!(busy, "try_lock({key}) failed, but no call on it is live");
            return Ok(());
        };
        prop_assert!(
            !busy,
            "try_lock({key}) succeeded while a call on it is live"
        );
        let id = self.tasks.len();
        let held = Held {
            _inside: Observed::enter(&self.observed, key, id),
            _guard: guard,
        };
        let call = Call::Lock {
            turn: None,
            held: Some(held),
        };
        self.push(key, call);
        Ok(())
    }

    fn woken(&self) -> Vec<usize> {
        (0..self.tasks.len())
            .filter(|&i| self.tasks[i].pollable())
            .collect()
    }

    fn poll(&mut self, id: usize) {
        let observed = Rc::clone(&self.observed);
        let task = &mut self.tasks[id];
        task.woken.0.store(false, Ordering::SeqCst);
        let waker = Waker::from(Arc::clone(&task.woken));
        let mut cx = Context::from_waker(&waker);
        match &mut task.call {
            Call::Serialize { future: slot, .. } => {
                let Some(future) = slot.as_mut() else {
                    return;
                };
                match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx))) {
                    Ok(Poll::Pending) => {}
                    Ok(Poll::Ready(_)) | Err(_) => *slot = None,
                }
            }
            Call::Lock { turn: slot, held } => {
                let Some(turn) = slot.as_mut() else {
                    return;
                };
                if let Poll::Ready(guard) = Pin::new(turn).poll(&mut cx) {
                    *slot = None;
                    *held = Some(Held {
                        _inside: Observed::enter(&observed, task.key, id),
                        _guard: guard,
                    });
                }
            }
        }
    }

    /// Ends the critical section of task `id`, if it is in one or waits to.
    fn open(&mut self, id: usize, command: Command) {
        match &mut self.tasks[id].call {
            Call::Serialize { gate, .. } => {
                if let Some(gate) = gate.take() {
                    let _ = gate.send(command);
                }
            }
            Call::Lock { held, .. } => *held = None,
        }
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Submit(handle, key) => self.submit(handle, key),
            Op::Lock(handle, key) => self.lock(handle, key),
            Op::TryLock(handle, key) => self.try_lock(handle, key)?,
            Op::Poll(n) => {
                let woken = self.woken();
                if !woken.is_empty() {
                    self.poll(woken[n % woken.len()]);
                }
            }
            Op::Open(n, command) => {
                if !self.tasks.is_empty() {
                    self.open(n % self.tasks.len(), command);
                }
            }
            Op::Cancel(n) => {
                let live: Vec<usize> = (0..self.tasks.len())
                    .filter(|&i| self.tasks[i].live())
                    .collect();
                if !live.is_empty() {
                    match &mut self.tasks[live[n % live.len()]].call {
                        Call::Serialize { future, .. } => *future = None,
                        Call::Lock { turn, held } => {
                            *turn = None;
                            *held = None;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let o = self.observed.borrow();
        prop_assert!(!o.overlap, "two tasks of one key were inside at once");
        for (key, entered) in o.entered.iter().enumerate() {
            prop_assert!(
                entered.windows(2).all(|w| w[0] < w[1]),
                "key {key} entered out of call order: {entered:?}"
            );
        }
        let live_keys = (0..KEYS).filter(|&key| self.busy(key)).count();
        prop_assert_eq!(
            self.handles[0].pending_keys(),
            live_keys,
            "pending_keys counts the keys with a live call"
        );
        Ok(())
    }

    /// Opens every gate, drops every guard (and each new one at once) and
    /// polls woken tasks until none is woken.
    fn drain(&mut self) -> Result<(), TestCaseError> {
        for id in 0..self.tasks.len() {
            self.open(id, Command::Finish);
        }
        while let Some(&id) = self.woken().first() {
            self.poll(id);
            self.open(id, Command::Finish);
            self.check()?;
        }
        let stuck: Vec<usize> = (0..self.tasks.len())
            .filter(|&i| self.tasks[i].live())
            .collect();
        prop_assert!(
            stuck.is_empty(),
            "tasks never woken (lost wake-up): {stuck:?}"
        );
        prop_assert_eq!(self.handles[0].pending_keys(), 0);
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn serializer_model_random_programs(ops in prop::collection::vec(op(), 1..80)) {
        quiet_deliberate_panics();
        let mut world = World::new();
        for op in &ops {
            world.apply(op)?;
            world.check()?;
        }
        world.drain()?;
    }
}

/// Keeps the messages of the programs' deliberate panics out of the output,
/// and lets every other panic through.
fn quiet_deliberate_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info.payload().downcast_ref::<String>().map(String::as_str);
            if !message.is_some_and(|m| m.ends_with("panicked on purpose")) {
                report(info);
            }
        }));
    });
}
