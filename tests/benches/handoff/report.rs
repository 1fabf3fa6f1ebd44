//! The run's summary: Markdown tables, as copied into `docs/benchmarks.md`,
//! and the goals as ratios within the run, each with its verdict.

use std::fmt::Write as _;
use std::time::Duration;

use crate::contended::Contended;
use crate::stats::{ms, us};
use crate::timed::Timings;
use crate::worker::{BOUNDS_US, Kind};

/// Uncontended, the reference never sleeps: its poll does not matter.
pub(crate) fn pairs_label(kind: Kind) -> String {
    match kind {
        Kind::Reference(_) => "reference".into(),
        _ => kind.label(),
    }
}

pub(crate) fn summary(
    contended: &[Contended],
    crash: &[Timings],
    handovers: &[Timings],
    uncontended: &[(Kind, f64)],
    workloads: &[(usize, u32)],
    elapsed: Duration,
) -> String {
    let get = |kind: Kind, p: usize| {
        contended
            .iter()
            .find(|r| r.kind == kind && r.processes == p)
            .unwrap()
    };
    let mut out = String::new();
    let w = &mut out;
    writeln!(w, "\n## hand-off summary\n").unwrap();
    writeln!(
        w,
        "| kind | P x K | acquisitions/s [runs] | hand-offs/s (share) | latency p50 / p99 / max | p99 beyond others' CS | gap p50 | CPU / acquisition |"
    )
    .unwrap();
    writeln!(w, "| --- | --- | --- | --- | --- | --- | --- | --- |").unwrap();
    for &(p, k) in workloads {
        for kind in Kind::ALL {
            let r = get(kind, p);
            writeln!(
                w,
                "| {} | {p} x {k} | {:.0} [{:.0}-{:.0}] | {:.0} ({:.2}) | {} / {} / {} | {} | {} | {} |",
                kind.label(),
                r.rate,
                r.spread.0,
                r.spread.1,
                r.handoff_rate,
                r.fairness,
                ms(r.p50),
                ms(r.p99),
                ms(r.max),
                ms(r.p99_beyond),
                us(r.gap),
                us(Duration::from_secs_f64(r.cpu)),
            )
            .unwrap();
        }
    }
    Timings::table(w, "crash takeover (SIGKILL -> waiter holds)", crash);
    Timings::table(
        w,
        "hand-over (release called -> sleeping waiter holds)",
        handovers,
    );
    let pair_rate = |kind: Kind| uncontended.iter().find(|(k, _)| *k == kind).unwrap().1;
    writeln!(
        w,
        "\n| uncontended | pairs/s | time per pair | time vs floor |"
    )
    .unwrap();
    writeln!(w, "| --- | --- | --- | --- |").unwrap();
    for (kind, rate) in uncontended {
        writeln!(
            w,
            "| {} | {rate:.0} | {} | {:.2}x |",
            pairs_label(*kind),
            us(Duration::from_secs_f64(1.0 / rate)),
            pair_rate(Kind::Floor) / rate
        )
        .unwrap();
    }

    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    writeln!(w, "\n| goal | measured | verdict |").unwrap();
    writeln!(w, "| --- | --- | --- |").unwrap();
    for &(p, _) in workloads {
        let h = get(Kind::Heldlock, p);
        let floor = get(Kind::Floor, p);
        let reference = get(Kind::Reference(50), p);
        let flock = get(Kind::Flock, p);
        let to_floor = h.rate / floor.rate;
        writeln!(
            w,
            "| P={p}: acquisitions/s >= 0.5x floor | {to_floor:.2}x (hand-offs/s: {:.2}x) | {} |",
            h.handoff_rate / floor.handoff_rate,
            verdict(to_floor >= 0.5)
        )
        .unwrap();
        let to_reference = h.rate / reference.rate;
        let handoffs_to_reference = h.handoff_rate / reference.handoff_rate;
        writeln!(
            w,
            "| P={p}: >= 20x reference at 50 ms | acquisitions/s {to_reference:.2}x, hand-offs/s {handoffs_to_reference:.1}x | acquisitions {}, hand-offs {} |",
            verdict(to_reference >= 20.0),
            verdict(handoffs_to_reference >= 20.0)
        )
        .unwrap();
        let cpu = h.cpu / floor.cpu;
        writeln!(
            w,
            "| P={p}: CPU per acquisition <= 2x floor | {cpu:.2}x | {} |",
            verdict(cpu <= 2.0)
        )
        .unwrap();
        for bound in BOUNDS_US {
            let b = get(Kind::Bounded(bound), p);
            let cost = 1.0 - b.rate / h.rate;
            writeln!(
                w,
                "| P={p}: bounded waiting at {bound} us costs < 10 % of acquisitions/s | {:.0} % ({:.0} vs {:.0}/s; hand-off share {:.2} vs {:.2}; p99 {} vs {}; max {} vs {}) | {} |",
                cost * 100.0,
                b.rate,
                h.rate,
                b.fairness,
                h.fairness,
                ms(b.p99),
                ms(h.p99),
                ms(b.max),
                ms(h.max),
                verdict(cost < 0.10)
            )
            .unwrap();
        }
        writeln!(
            w,
            "| P={p}: vs flock (no goal) | acquisitions/s {:.2}x, CPU {:.2}x | - |",
            h.rate / flock.rate,
            h.cpu / flock.cpu
        )
        .unwrap();
    }
    if let Some(h) = contended
        .iter()
        .find(|r| r.kind == Kind::Heldlock && r.processes == 4)
    {
        writeln!(
            w,
            "| P=4: p99 latency beyond critical sections < 5 ms | {} (raw p99 {}) | {} |",
            ms(h.p99_beyond),
            ms(h.p99),
            verdict(h.p99_beyond < Duration::from_millis(5))
        )
        .unwrap();
    }
    if let Some(&(p, _)) = workloads.iter().max_by_key(|(p, _)| *p) {
        let p99s: Vec<String> = [Kind::Heldlock]
            .into_iter()
            .chain(BOUNDS_US.map(Kind::Bounded))
            .map(|kind| format!("{} {}", kind.label(), ms(get(kind, p).p99)))
            .collect();
        let best = [Kind::Heldlock]
            .into_iter()
            .chain(BOUNDS_US.map(Kind::Bounded))
            .map(|kind| get(kind, p).p99)
            .min()
            .unwrap();
        writeln!(
            w,
            "| P={p}: p99 acquire latency < 2 ms (some mode) | {} | {} |",
            p99s.join(", "),
            verdict(best < Duration::from_millis(2))
        )
        .unwrap();
    }
    let handover_of = |kind: Kind| handovers.iter().find(|t| t.kind == kind).unwrap().median;
    let faster =
        handover_of(Kind::Reference(50)).as_secs_f64() / handover_of(Kind::Heldlock).as_secs_f64();
    writeln!(
        w,
        "| hand-over to a sleeping waiter >= 20x faster than reference at 50 ms | {faster:.0}x ({} vs {}) | {} |",
        ms(handover_of(Kind::Heldlock)),
        ms(handover_of(Kind::Reference(50))),
        verdict(faster.is_finite() && faster >= 20.0)
    )
    .unwrap();
    let takeover = crash[0].median;
    writeln!(
        w,
        "| same-host crash takeover < 10 ms median | {} | {} |",
        ms(takeover),
        verdict(takeover < Duration::from_millis(10))
    )
    .unwrap();
    let slower = pair_rate(Kind::Floor) / pair_rate(Kind::Heldlock);
    writeln!(
        w,
        "| uncontended within 1.5x of floor | {slower:.2}x the floor's time per pair | {} |",
        verdict(slower <= 1.5)
    )
    .unwrap();
    writeln!(
        w,
        "| uncontended vs flock (no goal) | {:.1}x flock's time per pair | - |",
        pair_rate(Kind::Flock) / pair_rate(Kind::Heldlock)
    )
    .unwrap();
    write!(w, "\nwhole run: {:.0} s", elapsed.as_secs_f64()).unwrap();
    out
}
