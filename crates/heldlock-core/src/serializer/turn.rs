//! A call's ticket as a future ([`Turn`]), a held key as a guard
//! ([`KeyGuard`]), and a task run in its turn ([`Serialized`]).
//!
//! A turn owns one ticket from the moment the call returns; whatever
//! happens to it, it settles the ticket exactly once: it resolves into a
//! guard (which releases it on drop), or it is dropped, and then it
//! releases the ticket if it was served (polled or not) or cancels it.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use super::ticket::KeyRef;

/// A place in a key's queue: a future that resolves to a [`KeyGuard`] when it
/// is this call's turn. Returned by [`Serializer::lock`].
///
/// Dropping a `Turn` gives up the place; if the turn had already come, the key
/// passes to the next waiter at once. A turn passed to [`std::mem::forget`]
/// never settles its ticket: the key stays busy from the moment that ticket
/// comes, and the serializer's state is never freed (as forgetting a
/// `MutexGuard` keeps its mutex locked).
///
/// [`Serializer::lock`]: super::Serializer::lock
#[must_use = "a Turn holds a place in the queue; await it or drop it"]
pub struct Turn<K: Eq + Hash> {
    /// `None` once the turn has resolved into a guard.
    key: Option<KeyRef<K>>,
    ticket: usize,
}

impl<K: Eq + Hash> Turn<K> {
    pub(super) fn new(key: KeyRef<K>, ticket: usize) -> Self {
        Turn {
            key: Some(key),
            ticket,
        }
    }

    /// Ready once this call's ticket is served; the turn then holds the key
    /// until it is dropped, as its guard would.
    pub(super) fn poll_granted(&self, cx: &Context<'_>) -> Poll<()> {
        let Some(key) = &self.key else {
            panic!("`Turn` polled after it completed");
        };
        if key.is_served(self.ticket) {
            return Poll::Ready(());
        }
        key.wait(self.ticket, cx.waker())
    }
}

impl<K: Eq + Hash> Future for Turn<K> {
    type Output = KeyGuard<K>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<KeyGuard<K>> {
        std::task::ready!(self.poll_granted(cx));
        match self.key.take() {
            Some(key) => Poll::Ready(KeyGuard { key }),
            None => unreachable!("poll_granted panics on a completed turn"),
        }
    }
}

impl<K: Eq + Hash> Turn<K> {
    /// Settles the ticket now, as dropping the turn would: releases the key
    /// if the ticket was served, gives the ticket up otherwise.
    fn settle(&mut self) {
        let Some(key) = self.key.take() else {
            return; // resolved: the guard owns the ticket now
        };
        // A served ticket stays served until this turn releases it, so this
        // check needs no mutex when it says yes.
        if key.is_served(self.ticket) {
            key.release();
        } else {
            key.give_up(self.ticket);
        }
    }
}

impl<K: Eq + Hash> Drop for Turn<K> {
    fn drop(&mut self) {
        self.settle();
    }
}

impl<K: Eq + Hash + fmt::Debug> fmt::Debug for Turn<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Turn")
            .field("key", &self.key.as_ref().map(KeyRef::key))
            .field(
                "granted",
                &self.key.as_ref().is_none_or(|k| k.is_served(self.ticket)),
            )
            .finish()
    }
}

/// Holds one key of a [`Serializer`]; dropping it passes the key on. A guard
/// passed to [`std::mem::forget`] holds its key forever, and the
/// serializer's state is never freed.
///
/// Returned by [`Serializer::lock`] and [`Serializer::try_lock`].
///
/// [`Serializer`]: super::Serializer
/// [`Serializer::lock`]: super::Serializer::lock
/// [`Serializer::try_lock`]: super::Serializer::try_lock
#[must_use = "the key is released as soon as the guard is dropped"]
#[clippy::has_significant_drop]
pub struct KeyGuard<K: Eq + Hash> {
    /// Its ticket is the one being served.
    key: KeyRef<K>,
}

impl<K: Eq + Hash> KeyGuard<K> {
    pub(super) fn new(key: KeyRef<K>) -> Self {
        KeyGuard { key }
    }

    /// The key this guard holds.
    pub fn key(&self) -> &K {
        self.key.key()
    }
}

impl<K: Eq + Hash> Drop for KeyGuard<K> {
    fn drop(&mut self) {
        self.key.release();
    }
}

impl<K: Eq + Hash + fmt::Debug> fmt::Debug for KeyGuard<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyGuard")
            .field("key", self.key.key())
            .finish()
    }
}

pin_project_lite::pin_project! {
    /// A task run in its turn: the future of [`Serializer::serialize`].
    ///
    /// The turn itself holds the key once granted (no guard is made), so the
    /// future is the task and a turn (a reference and a ticket), which
    /// matters when many thousands are queued at once.
    ///
    /// [`Serializer::serialize`]: super::Serializer::serialize
    pub(super) struct Serialized<K, F>
    where
        K: Eq,
        K: Hash,
    {
        // Declared first, so dropped first in every state of the future:
        // the task's destructors run while the key is still held, or
        // before it was granted, never after it passed on. `None` once the
        // task finished or panicked.
        #[pin]
        task: Option<F>,
        turn: Turn<K>,
    }
}

impl<K: Eq + Hash, F> Serialized<K, F> {
    pub(super) fn new(turn: Turn<K>, task: F) -> Self {
        Serialized {
            task: Some(task),
            turn,
        }
    }
}

impl<K: Eq + Hash, F: Future> Future for Serialized<K, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        std::task::ready!(this.turn.poll_granted(cx));
        let Some(task) = this.task.as_mut().as_pin_mut() else {
            panic!("`Serializer::serialize`'s future polled after it completed");
        };
        let polled = match catch_unwind(AssertUnwindSafe(|| task.poll(cx))) {
            Ok(polled) => polled,
            Err(panic) => {
                // As its caller's own code would: the task is dropped as
                // the panic leaves it, and the key passes on then, not when
                // this future is dropped (a caller that catches the panic
                // may keep it).
                this.task.set(None);
                this.turn.settle();
                resume_unwind(panic);
            }
        };
        let output = std::task::ready!(polled);
        // The key passes on as soon as the task is done.
        this.task.set(None);
        this.turn.settle();
        Poll::Ready(output)
    }
}
