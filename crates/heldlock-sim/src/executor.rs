//! A single-threaded executor whose scheduler is the simulation loop: it
//! polls exactly the task it is told to, once, and reports which tasks are
//! ready. Nothing runs unless the loop picks it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Wake, Waker};

use crate::world::{Current, TaskFuture, World};

/// Marks a task ready when woken.
struct TaskWaker {
    id: u64,
    ready: Arc<Mutex<BTreeSet<u64>>>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(self.id);
    }
}

struct Task {
    contender: Option<usize>,
    label: &'static str,
    future: TaskFuture,
    waker: Waker,
}

/// The tasks of one run; see the [module docs](self).
pub(crate) struct Executor {
    tasks: BTreeMap<u64, Task>,
    ready: Arc<Mutex<BTreeSet<u64>>>,
    next_id: u64,
}

impl Executor {
    pub(crate) fn new() -> Self {
        Executor {
            tasks: BTreeMap::new(),
            ready: Arc::new(Mutex::new(BTreeSet::new())),
            next_id: 1,
        }
    }

    /// Adds a task, ready to run. Returns its id.
    pub(crate) fn spawn(
        &mut self,
        contender: Option<usize>,
        label: &'static str,
        future: TaskFuture,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let waker = Waker::from(Arc::new(TaskWaker {
            id,
            ready: Arc::clone(&self.ready),
        }));
        self.tasks.insert(
            id,
            Task {
                contender,
                label,
                future,
                waker,
            },
        );
        self.ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id);
        id
    }

    /// Moves the tasks spawned during the last poll into the executor;
    /// returns their ids and labels.
    pub(crate) fn adopt_spawned(&mut self, world: &World) -> Vec<(u64, &'static str)> {
        let spawned = std::mem::take(&mut world.lock().spawned);
        spawned
            .into_iter()
            .map(|s| (self.spawn(s.contender, s.label, s.future), s.label))
            .collect()
    }

    /// The ready tasks (in id order) whose contender `runnable` allows.
    pub(crate) fn runnable(&self, runnable: impl Fn(Option<usize>) -> bool) -> Vec<u64> {
        let ready = self.ready.lock().unwrap_or_else(PoisonError::into_inner);
        ready
            .iter()
            .filter(|id| self.tasks.get(id).is_some_and(|t| runnable(t.contender)))
            .copied()
            .collect()
    }

    pub(crate) fn label_of(&self, id: u64) -> &'static str {
        self.tasks.get(&id).map_or("?", |t| t.label)
    }

    /// Polls task `id` once (as the current task of `world`). Returns
    /// whether it finished; a finished task is dropped.
    pub(crate) fn poll(&mut self, id: u64, world: &World) -> bool {
        self.ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        let Some(task) = self.tasks.get_mut(&id) else {
            return true;
        };
        world.lock().current = Some(Current {
            task: id,
            contender: task.contender,
        });
        let mut cx = Context::from_waker(&task.waker);
        let done = task.future.as_mut().poll(&mut cx).is_ready();
        world.lock().current = None;
        if done {
            // Dropped here, with no lock held: drops may touch the world.
            drop(self.tasks.remove(&id));
        }
        done
    }

    /// Removes every task of `contender` (a crash) and returns them, to be
    /// dropped by the caller with no lock held.
    pub(crate) fn kill(&mut self, contender: usize) -> Vec<TaskFuture> {
        let ids: Vec<u64> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.contender == Some(contender))
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .filter_map(|id| self.tasks.remove(&id))
            .map(|t| t.future)
            .collect()
    }

    /// Removes one task (a cancellation) and returns it, to be dropped by
    /// the caller with no lock held.
    pub(crate) fn cancel(&mut self, id: u64) -> Option<TaskFuture> {
        self.tasks.remove(&id).map(|t| t.future)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The ids of all tasks, in order.
    pub(crate) fn ids(&self) -> Vec<u64> {
        self.tasks.keys().copied().collect()
    }

    /// Drops every task (the end of a run).
    pub(crate) fn clear(&mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        drop(tasks);
    }
}
