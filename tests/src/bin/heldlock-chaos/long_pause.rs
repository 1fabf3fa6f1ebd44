//! The long-pause scenario: a holder stopped for longer than its lease,
//! and what its peers and its own refresh make of it.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::account::{account, trash, verdict};
use crate::config::Config;
use crate::files::{COUNTER, LOCK, PAUSED_GO, PAUSED_READ, PAUSED_RESULT, last_value};
use crate::fleet::{Fleet, Slot};
use crate::observe::lock_pid;
use crate::util::{millis, text, wait_exit, wait_for};

pub(super) fn long_pause(config: &Config, dir: &Path) -> Result<(), String> {
    let timing = config.timing()?;
    let lock = dir.join(LOCK);
    println!(
        "heldlock-chaos --long-pause: stale {} ms, heartbeat {} ms, poll {} ms, {}, dir {}",
        millis(timing.stale),
        millis(timing.heartbeat),
        millis(timing.poll),
        config.describe(),
        dir.display()
    );
    let mut fleet = Fleet::new(config, dir)?;
    fleet.next_inc = 1; // incarnation 0 is the pausable worker
    let child = Command::new(&fleet.exe)
        .arg("pausable")
        .arg(dir)
        .arg(config.stale_ms.to_string())
        .arg(config.poll_ms.to_string())
        .arg(config.kind())
        .spawn()
        .map_err(|e| format!("start the pausable worker: {e}"))?;
    let pid = i32::try_from(child.id()).map_err(text)?;
    fleet.slots.push(Slot {
        child,
        pid,
        inc: 0,
        paused_until: None,
        paused_since: 0,
    });
    let limit = timing.stale * 5 + Duration::from_secs(30);

    wait_for(limit, "the first worker to hold the lock", || {
        dir.join(PAUSED_READ).exists()
    })?;
    Fleet::stop(pid)?;
    let stopped_at = Instant::now();
    if lock_pid(&lock) != Some(pid) {
        return Err("the stopped worker does not hold the lock".into());
    }
    // A peer does one increment. With the bare lease it has to wait until
    // the stopped holder's lock is stale, break it, commit, and leave. With
    // `FileLock` on this host the stopped holder's kernel lock is proof of
    // life: the peer must wait for it however long it is stopped.
    let mut peer = fleet.spawn(&["1".to_string()])?;
    let same_host = config.kind() == "file";
    let (took_over_after, during, kept) = if same_host {
        // Real time is what is tested: twice `stale` with nobody refreshing.
        let long_enough = timing.stale * 2 + timing.heartbeat;
        std::thread::sleep(long_enough.saturating_sub(stopped_at.elapsed()));
        let kept = peer.child.try_wait().map_err(text)?.is_none() && lock_pid(&lock) == Some(pid);
        (stopped_at.elapsed(), last_value(&dir.join(COUNTER))?, kept)
    } else {
        let status = wait_exit(&mut peer.child, limit)?;
        let took_over_after = stopped_at.elapsed();
        if !status.success() {
            return Err(format!("the peer failed: {status}"));
        }
        let during = last_value(&dir.join(COUNTER))?;
        // Keep the pause clearly longer than `stale` (the peer may have
        // broken the lock a little sooner, counted from the holder's last
        // stamp).
        let long_enough = timing.stale + timing.heartbeat;
        std::thread::sleep(long_enough.saturating_sub(stopped_at.elapsed()));
        (took_over_after, during, false)
    };
    fs::write(dir.join(PAUSED_GO), "go\n").map_err(text)?;
    let paused_for = stopped_at.elapsed();
    Fleet::signal(pid, Signal::CONT)?;
    fleet.slots[0].paused_until = None;
    fleet.wait_all(limit)?;
    if same_host {
        let status = wait_exit(&mut peer.child, limit)?;
        if !status.success() {
            return Err(format!("the peer failed: {status}"));
        }
    }

    let result = fs::read_to_string(dir.join(PAUSED_RESULT)).map_err(text)?;
    let acc = account(dir, 2, &BTreeMap::new());
    let (explained, unexplained) = trash(dir, &BTreeMap::new())?;
    let lock_free = fs::symlink_metadata(&lock).is_err();
    let skipped = result.contains("first=skipped") && result.contains("refresh=false");
    if same_host {
        println!(
            "holder paused for {} ms (stale {} ms); the peer on its host waited for it: {}",
            millis(paused_for),
            millis(timing.stale),
            if kept { "kept" } else { "NOT kept" }
        );
    } else {
        println!(
            "holder paused for {} ms (stale {} ms); the peer took the lock over and committed \
             value {during} after {} ms",
            millis(paused_for),
            millis(timing.stale),
            millis(took_over_after)
        );
    }
    println!("resumed holder: {}", result.trim());
    println!(
        "counter {} = commits {} ({} logged); writes skipped after refresh() said lost: {}",
        acc.counter, acc.commits, acc.logged, acc.skipped
    );
    println!(
        "long-pause-summary paused_ms={} stale_ms={} takeover_ms={} skipped={} counter={} \
         commits={} lock_free={lock_free} kept={kept} trash={} problems={}",
        millis(paused_for),
        millis(timing.stale),
        millis(took_over_after),
        skipped,
        acc.counter,
        acc.commits,
        explained.len() + unexplained.len(),
        acc.problems.len()
    );
    let mut problems = acc.problems;
    if paused_for <= timing.stale {
        problems.push("the pause was not longer than stale".into());
    }
    if same_host {
        if !kept {
            problems.push("a peer on the holder's host took its lock while it was stopped".into());
        }
        if during != 0 {
            problems.push(format!(
                "the peer committed while the holder was stopped: {during}"
            ));
        }
        // Resumed, the holder writes (its lock was still its own), or skips
        // if its own clock says its lease ended: either way every increment
        // is counted once, the holder's two and the peer's one, less a
        // skipped one.
        if acc.counter != acc.commits || acc.counter + acc.skipped != 3 {
            problems.push(format!(
                "expected 3 increments less the skipped ones, got counter {} from {} commits \
                 and {} skipped",
                acc.counter, acc.commits, acc.skipped
            ));
        }
    } else if during != 1 {
        problems.push(format!(
            "the peer should have committed value 1, found {during}"
        ));
    }
    if !same_host && !skipped {
        problems.push(format!(
            "the resumed holder's refresh() did not report the loss: {}",
            result.trim()
        ));
    }
    if !same_host && !result.contains("retry_value=2") {
        problems.push("the skipped increment was not redone as value 2".into());
    }
    if !same_host && (acc.counter != 2 || acc.commits != 2 || acc.skipped != 1) {
        problems.push(format!(
            "expected counter 2 from 2 commits and 1 skipped write, got {} from {} and {}",
            acc.counter, acc.commits, acc.skipped
        ));
    }
    if !lock_free {
        problems.push("the lock file is still there".into());
    }
    if !(explained.is_empty() && unexplained.is_empty()) {
        problems.push(format!("trash left: {explained:?} {unexplained:?}"));
    }
    verdict(&problems)
}
