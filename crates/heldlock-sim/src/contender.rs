//! What each contender runs: exactly what a user of the lock would write.
//!
//! ```text
//! for each round:
//!     held = lock.acquire().await?            (the real acquire machine)
//!     a few sleeps, each abandoned if held.lost() fires
//!     if held.refresh().await == Ok(true): "write"
//!     held.release().await
//! ```

use std::future::poll_fn;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use heldlock_core::{Error, HeldLock, Lock};

use crate::config::{ContenderPlan, RoundPlan};
use crate::world::World;

/// The contender's program; see the [module docs](self).
pub(crate) async fn contender(world: Arc<World>, id: usize, lock: Lock, plan: ContenderPlan) {
    if !plan.start.is_zero() {
        world.sleep(plan.start).await;
    }
    for round in &plan.rounds {
        {
            let mut st = world.lock();
            let now = st.now;
            st.obs.acquiring[id] = Some(now);
            st.note("calls acquire()");
        }
        let result = lock.acquire().await;
        {
            let mut st = world.lock();
            if let Some(since) = st.obs.acquiring[id].take() {
                st.check_wait_bound(id, since);
            }
        }
        match result {
            Ok(held) => critical_section(&world, id, held, round).await,
            Err(error) => {
                let mut st = world.lock();
                st.obs.bump(match error {
                    Error::Timeout { .. } => "acquire.timeout",
                    _ => "acquire.error",
                });
                st.note(&format!("acquire() failed: {error}"));
            }
        }
        if !round.gap.is_zero() {
            world.sleep(round.gap).await;
        }
    }
    let mut st = world.lock();
    if let Some(proc) = st.procs.get_mut(id) {
        proc.finished = true;
    }
    st.note("finished");
}

async fn critical_section(world: &Arc<World>, id: usize, held: HeldLock, round: &RoundPlan) {
    let held = Arc::new(held);
    {
        let mut st = world.lock();
        st.enter_cs(id, Arc::clone(&held));
        st.note("enters its critical section");
    }
    for &duration in &round.sleeps {
        let mut lost = pin!(held.lost());
        let mut sleep = pin!(world.sleep(duration));
        let lost_fired = poll_fn(|cx| {
            if lost.as_mut().poll(cx).is_ready() {
                Poll::Ready(true)
            } else {
                sleep.as_mut().poll(cx).map(|()| false)
            }
        })
        .await;
        if lost_fired {
            world
                .lock()
                .note("lost() fired: abandons its critical section");
            break;
        }
    }
    let refreshed = held.refresh().await;
    {
        let mut st = world.lock();
        match &refreshed {
            Ok(true) => {
                st.obs.bump("write");
                st.note("refresh() = Ok(true): writes");
            }
            Ok(false) => {
                st.obs.bump("refresh.lost");
                st.note("refresh() = Ok(false): does not write");
            }
            Err(error) => {
                st.obs.bump("refresh.error");
                st.note(&format!("refresh() failed, does not write: {error}"));
            }
        }
    }
    // Leave the critical section, then drop the checker's handle with no
    // lock held (dropping a guard may report a warning into the world).
    let shared = world.lock().obs.leave_cs(id);
    drop(shared);
    match Arc::try_unwrap(held) {
        Ok(held) => {
            let released = held.release().await;
            let mut st = world.lock();
            match released {
                Ok(released) => st.note(&format!("release() = {released:?}")),
                Err(error) => {
                    st.obs.bump("release.error");
                    st.note(&format!("release() failed: {error}"));
                }
            }
        }
        Err(held) => {
            world.lock().note("the guard is still shared; dropping it");
            drop(held);
        }
    }
}
