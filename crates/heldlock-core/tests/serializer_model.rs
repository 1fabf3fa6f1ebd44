//! Property test: random programs of submit / poll / finish / fail / panic /
//! cancel over a few keys, run on a deterministic single-threaded executor that
//! polls only tasks that were woken. Checked after every step and at the end:
//!
//! * at most one task per key is inside its critical section;
//! * the tasks of a key enter their critical sections in call order;
//! * once every gate is opened, every surviving task completes by being woken
//!   (a lost wake-up would leave it pending forever);
//! * `pending_keys() == 0` at the end.

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
use heldlock_core::Serializer;
use proptest::prelude::*;

const KEYS: u8 = 3;

#[derive(Clone, Copy, Debug)]
enum Command {
    Finish,
    Fail,
    Panic,
}

#[derive(Clone, Debug)]
enum Op {
    /// Submit a task on a key (the ticket is taken now).
    Submit(u8),
    /// Poll the n-th (modulo) woken task.
    Poll(usize),
    /// Let the n-th (modulo) task leave its critical section this way.
    Open(usize, Command),
    /// Drop the n-th (modulo) unfinished task's future.
    Cancel(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..KEYS).prop_map(Op::Submit),
        5 => any::<usize>().prop_map(Op::Poll),
        2 => (any::<usize>(), prop_oneof![
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

struct Task {
    future: Option<TaskFuture>,
    woken: Arc<Flag>,
    gate: Option<oneshot::Sender<Command>>,
}

struct World {
    serializer: Serializer<u8>,
    observed: Rc<RefCell<Observed>>,
    tasks: Vec<Task>,
}

impl World {
    fn new() -> Self {
        World {
            serializer: Serializer::new(),
            observed: Rc::new(RefCell::new(Observed {
                entered: vec![Vec::new(); KEYS as usize],
                ..Observed::default()
            })),
            tasks: Vec::new(),
        }
    }

    fn submit(&mut self, key: u8) {
        let id = self.tasks.len();
        let (gate, commands) = oneshot::channel();
        let observed = Rc::clone(&self.observed);
        let future = self.serializer.serialize(key, async move {
            let key = usize::from(key);
            {
                let mut o = observed.borrow_mut();
                o.inside[key] += 1;
                o.overlap |= o.inside[key] > 1;
                o.entered[key].push(id);
            }
            let _inside = Inside { key, observed };
            match commands.await {
                Ok(Command::Finish) | Err(_) => Ok(()),
                Ok(Command::Fail) => Err(()),
                Ok(Command::Panic) => panic!("task {id} panicked on purpose"),
            }
        });
        self.tasks.push(Task {
            future: Some(Box::pin(future)),
            woken: Arc::new(Flag(AtomicBool::new(true))),
            gate: Some(gate),
        });
    }

    fn woken(&self) -> Vec<usize> {
        (0..self.tasks.len())
            .filter(|&i| {
                self.tasks[i].future.is_some() && self.tasks[i].woken.0.load(Ordering::SeqCst)
            })
            .collect()
    }

    fn poll(&mut self, id: usize) {
        let task = &mut self.tasks[id];
        task.woken.0.store(false, Ordering::SeqCst);
        let waker = Waker::from(Arc::clone(&task.woken));
        let mut cx = Context::from_waker(&waker);
        let Some(future) = task.future.as_mut() else {
            return;
        };
        match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx))) {
            Ok(Poll::Pending) => {}
            Ok(Poll::Ready(_)) | Err(_) => task.future = None,
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Submit(key) => self.submit(key),
            Op::Poll(n) => {
                let woken = self.woken();
                if !woken.is_empty() {
                    self.poll(woken[n % woken.len()]);
                }
            }
            Op::Open(n, command) => {
                if !self.tasks.is_empty() {
                    let id = n % self.tasks.len();
                    if let Some(gate) = self.tasks[id].gate.take() {
                        let _ = gate.send(command);
                    }
                }
            }
            Op::Cancel(n) => {
                let live: Vec<usize> = (0..self.tasks.len())
                    .filter(|&i| self.tasks[i].future.is_some())
                    .collect();
                if !live.is_empty() {
                    self.tasks[live[n % live.len()]].future = None;
                }
            }
        }
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
        Ok(())
    }

    /// Opens every gate and polls woken tasks until none is woken.
    fn drain(&mut self) -> Result<(), TestCaseError> {
        for task in &mut self.tasks {
            if let Some(gate) = task.gate.take() {
                let _ = gate.send(Command::Finish);
            }
        }
        while let Some(&id) = self.woken().first() {
            self.poll(id);
            self.check()?;
        }
        let stuck: Vec<usize> = (0..self.tasks.len())
            .filter(|&i| self.tasks[i].future.is_some())
            .collect();
        prop_assert!(
            stuck.is_empty(),
            "tasks never woken (lost wake-up): {stuck:?}"
        );
        prop_assert_eq!(self.serializer.pending_keys(), 0);
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
            world.apply(op);
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
