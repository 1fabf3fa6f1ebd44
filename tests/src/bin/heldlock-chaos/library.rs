//! The library mode's run: workers that lock through heldlock's API, killed
//! and paused at random, then the account of every increment.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::account::{account, count_commits, trash, verdict};
use crate::config::Config;
use crate::files::{LOCK, STOP};
use crate::fleet::Fleet;
use crate::observe::{Takeover, lock_pid};
use crate::rng::{Rng, clock_seed};
use crate::util::{epoch_ms, millis, ms, text};

#[derive(Default)]
struct Tally {
    kills: u64,
    holder_kills: u64,
    pauses: u64,
    holder_pauses: u64,
    longest_pause: Duration,
}

pub(super) fn chaos(config: &Config, dir: &Path) -> Result<(), String> {
    let timing = config.timing()?;
    let bound = timing.stale.saturating_sub(timing.heartbeat);
    let max_pause = config.max_pause_ms.map_or(bound * 2 / 3, ms).max(ms(1));
    let seed = config.seed.unwrap_or_else(clock_seed);
    let mut rng = Rng(seed);
    let lock = dir.join(LOCK);
    println!(
        "heldlock-chaos: {} processes, {:.1} s, stale {} ms, heartbeat {} ms, poll {} ms, \
         pauses 10..={} ms, {}, seed {seed}, dir {}",
        config.processes,
        config.seconds.as_secs_f64(),
        millis(timing.stale),
        millis(timing.heartbeat),
        millis(timing.poll),
        millis(max_pause),
        config.describe(),
        dir.display()
    );

    let mut fleet = Fleet::new(config, dir)?;
    for _ in 0..config.processes {
        let slot = fleet.spawn(&[])?;
        fleet.slots.push(slot);
    }
    let mut tally = Tally::default();
    let mut takeovers: Vec<Takeover> = Vec::new();
    let started = Instant::now();
    let end = started + config.seconds;
    let half = started + config.seconds / 2;
    let mut next_event = started + ms(rng.range(100, 400));

    while Instant::now() < end {
        let now = Instant::now();
        fleet.resume_due(now)?;
        fleet.check_alive()?;
        for t in &mut takeovers {
            t.poll(&lock, now);
        }
        if now >= next_event {
            // Make sure a bounded run shows each kind of event at least once.
            let force_kill = tally.holder_kills == 0 && now >= half;
            let force_pause = !force_kill && tally.holder_pauses == 0 && now >= half;
            let holder = lock_pid(&lock)
                .and_then(|pid| fleet.slot_of(pid))
                .filter(|&i| fleet.slots[i].paused_until.is_none());
            let victim = match holder {
                Some(i) if force_kill || force_pause || rng.one_in(2) => Some(i),
                _ if force_kill || force_pause => None, // wait for a holder
                _ => Some(rng.index(fleet.slots.len())),
            };
            if let Some(i) = victim {
                let pid = fleet.slots[i].pid;
                let paused = fleet.slots[i].paused_until.is_some();
                if force_kill || (!force_pause && rng.one_in(3)) {
                    // Frozen first, so that the lock file tells for sure
                    // whether it dies holding the lock: a same-host waiter
                    // may break a dead holder's lock within microseconds.
                    if !paused {
                        Fleet::stop(pid)?;
                    }
                    let left = Takeover::of(&lock, pid);
                    fleet.kill_and_restart(i)?;
                    tally.kills += 1;
                    if let Some(mut t) = left {
                        t.killed_at = Instant::now();
                        tally.holder_kills += 1;
                        takeovers.push(t);
                    }
                } else if !paused {
                    Fleet::stop(pid)?;
                    let pause = ms(rng.range(10, u64::try_from(millis(max_pause)).unwrap_or(10)));
                    fleet.slots[i].paused_until = Some(Instant::now() + pause);
                    fleet.slots[i].paused_since = epoch_ms();
                    tally.pauses += 1;
                    tally.longest_pause = tally.longest_pause.max(pause);
                    if lock_pid(&lock) == Some(pid) {
                        tally.holder_pauses += 1;
                    }
                }
                next_event = Instant::now() + ms(rng.range(100, 400));
            }
        }
        std::thread::sleep(ms(2));
    }

    // Recovery: no more signals; every lock a killed holder left must be
    // taken over, and every live worker must commit again.
    fleet.resume_all()?;
    let settled_at = Instant::now();
    let limit = timing.stale * 3 + Duration::from_secs(20);
    let baseline: Vec<(u64, usize)> = fleet
        .slots
        .iter()
        .map(|s| (s.inc, count_commits(dir, s.inc)))
        .collect();
    loop {
        let now = Instant::now();
        fleet.check_alive()?;
        for t in &mut takeovers {
            t.poll(&lock, now);
        }
        let recovered = takeovers.iter().all(|t| t.took.is_some())
            && baseline
                .iter()
                .all(|&(inc, before)| count_commits(dir, inc) > before);
        if recovered {
            break;
        }
        if now.saturating_duration_since(settled_at) > limit {
            return Err(format!(
                "no recovery within {limit:?} after the last signal: {} of {} takeovers, \
                 workers without a new commit: {:?}",
                takeovers.iter().filter(|t| t.took.is_some()).count(),
                takeovers.len(),
                baseline
                    .iter()
                    .filter(|&&(inc, before)| count_commits(dir, inc) <= before)
                    .map(|&(inc, _)| inc)
                    .collect::<Vec<_>>()
            ));
        }
        std::thread::sleep(ms(5));
    }
    fs::write(dir.join(STOP), "stop\n").map_err(text)?;
    fleet.wait_all(Duration::from_secs(60))?;

    let acc = account(dir, fleet.next_inc, &fleet.killed);
    let (explained_trash, unexplained_trash) = trash(dir, &fleet.killed)?;
    let lock_free = fs::symlink_metadata(&lock).is_err();
    let longest_takeover = takeovers.iter().filter_map(|t| t.took).max();
    let takeover_bound = timing.stale + timing.poll + ms(config.takeover_slack_ms);

    println!(
        "kills: {} ({} while holding the lock), each restarted",
        tally.kills, tally.holder_kills
    );
    println!(
        "pauses: {} ({} of the holder), longest {} ms",
        tally.pauses,
        tally.holder_pauses,
        millis(tally.longest_pause)
    );
    println!(
        "increments: {} = counter {} ({} logged, {} committed just before a SIGKILL took the log line); \
         writes skipped after refresh() said lost: {}",
        acc.commits, acc.counter, acc.logged, acc.unlogged_after_kill, acc.skipped
    );
    for &(inc, seq, at) in &acc.skips {
        // The pause of that worker that began last before its skip.
        let pause = fleet
            .pauses
            .iter()
            .filter(|&&(i, start, _)| i == inc && start <= at)
            .max_by_key(|&&(_, start, _)| start);
        match pause {
            Some(&(_, start, end)) if at.saturating_sub(end) < 5000 => println!(
                "skipped write: incarnation {inc} seq {seq}: it was paused {} ms, resumed {} ms \
                 before refresh() said lost (the lease's margin: a pause plus scheduling \
                 delay reached `stale`)",
                end.saturating_sub(start),
                at.saturating_sub(end)
            ),
            _ => println!(
                "skipped write: incarnation {inc} seq {seq}: not paused in the 5 s before; \
                 refresh() said lost"
            ),
        }
    }
    println!(
        "takeovers: {} of {} killed holders' locks, longest {} ms (bound {} ms)",
        takeovers.iter().filter(|t| t.took.is_some()).count(),
        takeovers.len(),
        longest_takeover.map_or(0, millis),
        millis(takeover_bound)
    );
    println!(
        "lock free: {}; trash left: {} (by processes killed mid-step: {})",
        if lock_free { "yes" } else { "NO" },
        unexplained_trash.len() + explained_trash.len(),
        explained_trash.len()
    );
    println!(
        "chaos-summary kills={} holder_kills={} pauses={} holder_pauses={} increments={} counter={} \
         logged={} unlogged_after_kill={} skipped={} lost={} doubled={} takeovers={} \
         longest_takeover_ms={} lock_free={lock_free} trash_mid_step={} trash_unexplained={} \
         problems={}",
        tally.kills,
        tally.holder_kills,
        tally.pauses,
        tally.holder_pauses,
        acc.commits,
        acc.counter,
        acc.logged,
        acc.unlogged_after_kill,
        acc.skipped,
        acc.lost,
        acc.doubled,
        takeovers.len(),
        longest_takeover.map_or(0, millis),
        explained_trash.len(),
        unexplained_trash.len(),
        acc.problems.len()
    );

    let mut problems = acc.problems;
    if !lock_free {
        problems.push("the lock file is still there".into());
    }
    if !unexplained_trash.is_empty() {
        problems.push(format!("trash left: {unexplained_trash:?}"));
    }
    if let Some(longest) = longest_takeover
        && longest > takeover_bound
    {
        problems.push(format!(
            "a takeover took {} ms, above {} ms",
            millis(longest),
            millis(takeover_bound)
        ));
    }
    verdict(&problems)
}
