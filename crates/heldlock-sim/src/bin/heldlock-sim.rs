//! `heldlock-sim`: run a simulation campaign, or replay (and shrink) one seed.
//!
//! ```text
//! heldlock-sim campaign --contenders 3 --seeds 100000 [--first S] [--jobs N] [CONFIG]
//! heldlock-sim replay --seed S [--tape T] [--shrink] [CONFIG]
//! heldlock-sim serializer --seeds N [--first S]
//! heldlock-sim limit releaser-paused [--seeds N]
//! ```

use std::process::ExitCode;

use heldlock_sim::args::CONFIG_HELP;
use heldlock_sim::campaign::{Campaign, run_campaign};
use heldlock_sim::shrink::{Target, shrink};
use heldlock_sim::{Class, RunOptions, SimConfig, Tape, run};

const USAGE: &str = "usage:
  heldlock-sim campaign [--seeds N] [--first S] [--jobs N] [--show N] [CONFIG]
      run seeds S..S+N (default 0..1000), print schedules/s, the faults exercised and
      the failing seeds with their replay commands; exit 1 on any violation
      (a known race or late loss included)
  heldlock-sim replay --seed S [--tape T] [--shrink] [--known|--late] [--invariant NAME] [CONFIG]
      run one seed with a full trace (or the given tape); --shrink also shrinks the
      first real violation (--known: known-race finding, --late: known late-loss
      finding; --invariant: of that
      invariant, e.g. mutual-exclusion) and prints the shrunk schedule
  heldlock-sim serializer [--seeds N] [--first S]
      the Serializer under the scheduler, with cancellation at every point
  heldlock-sim limit releaser-paused [--seeds N] [--first S]
      an EXPECTED FAILURE: the campaign that shows a documented limit of any
      lock-file protocol (docs/safety.md), with its measured rate; exits 1 when
      it shows, as every campaign with a violation does

CONFIG:";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("campaign") => report(campaign(&args[1..])),
        Some("replay") => report(replay(&args[1..])),
        Some("serializer") => report(serializer(&args[1..])),
        Some("limit") => report(limit(&args[1..])),
        Some("help" | "--help" | "-h") | None => {
            println!("{USAGE}\n{CONFIG_HELP}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("heldlock-sim: unknown command {other:?}\n\n{USAGE}\n{CONFIG_HELP}");
            ExitCode::FAILURE
        }
    }
}

fn report(result: Result<bool, String>) -> ExitCode {
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(message) => {
            eprintln!("heldlock-sim: {message}");
            ExitCode::from(2)
        }
    }
}

/// Options of a subcommand: the configuration, and the rest by name.
struct Parsed {
    config: SimConfig,
    rest: Vec<(String, Option<String>)>,
}

fn parse(args: &[String], flags: &[&str]) -> Result<Parsed, String> {
    let mut config = SimConfig::default();
    let mut rest = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let option = args[i].as_str();
        if flags.contains(&option) {
            rest.push((option.to_owned(), None));
            i += 1;
            continue;
        }
        let value = args.get(i + 1).map(String::as_str);
        if !config.apply_arg(option, value).map_err(|e| e.to_string())? {
            let value = value.ok_or_else(|| format!("option {option} needs a value"))?;
            rest.push((option.to_owned(), Some(value.to_owned())));
        }
        i += 2;
    }
    Ok(Parsed { config, rest })
}

impl Parsed {
    fn take(&mut self, name: &str) -> Option<String> {
        let at = self.rest.iter().position(|(n, _)| n == name)?;
        self.rest.remove(at).1
    }

    fn flag(&mut self, name: &str) -> bool {
        match self.rest.iter().position(|(n, _)| n == name) {
            Some(at) => {
                self.rest.remove(at);
                true
            }
            None => false,
        }
    }

    fn number(&mut self, name: &str, default: u64) -> Result<u64, String> {
        match self.take(name) {
            None => Ok(default),
            Some(text) => text
                .parse()
                .map_err(|_| format!("{name} takes a number, not {text:?}")),
        }
    }

    fn done(self) -> Result<SimConfig, String> {
        match self.rest.first() {
            Some((name, _)) => Err(format!("unknown option {name}; see --help")),
            None => Ok(self.config),
        }
    }
}

/// The configuration that shows the documented limit `name`.
fn limit_config(name: &str) -> Result<SimConfig, String> {
    match name {
        // A releaser stopped between its ownership check and its rename
        // for longer than its lease: a peer on another host broke the lock
        // and took it meanwhile, and the rename moves the new holder's lock.
        "releaser-paused" => Ok(SimConfig {
            contenders: 6,
            hosts: 2,
            faults: heldlock_sim::Faults {
                long_pause: true,
                ..heldlock_sim::Faults::NONE
            },
            fault_rate: 600,
            strategy: heldlock_sim::Strategy::Random,
            ..SimConfig::default()
        }),
        other => Err(format!(
            "unknown limit {other:?}; the limits: releaser-paused"
        )),
    }
}

fn limit(args: &[String]) -> Result<bool, String> {
    let Some((name, rest)) = args.split_first() else {
        return Err("limit needs a name: releaser-paused".to_owned());
    };
    let config = limit_config(name)?;
    let mut with_config: Vec<String> = config.to_args().split(' ').map(str::to_owned).collect();
    with_config.extend(rest.iter().cloned());
    println!(
        "EXPECTED FAILURE: the documented limit `{name}` (docs/safety.md, \"What remains unprotected\")"
    );
    let shown = campaign(&with_config)?;
    if shown {
        println!("the limit did not show in these seeds: docs/safety.md's rate may be out of date");
    } else {
        println!("EXPECTED FAILURE: the limit `{name}` showed, as documented");
    }
    Ok(shown)
}

fn campaign(args: &[String]) -> Result<bool, String> {
    let mut parsed = parse(args, &[])?;
    let seeds = parsed.number("--seeds", 1_000)?;
    let first = parsed.number("--first", 0)?;
    let default_jobs = std::thread::available_parallelism().map_or(1, usize::from);
    let jobs = usize::try_from(parsed.number("--jobs", default_jobs as u64)?).unwrap_or(1);
    let show = usize::try_from(parsed.number("--show", 5)?).unwrap_or(5);
    let config = parsed.done()?;
    println!(
        "campaign: seeds {first}..{} of: {}",
        first + seeds,
        config.to_args()
    );
    let report = run_campaign(&Campaign {
        config: config.clone(),
        first,
        seeds,
        jobs,
    });
    print!("{report}");
    if !report.known.is_empty() {
        println!(
            "known check-then-rename race (docs/testing.md): {} seeds, first {}",
            report.known.len(),
            report.known[0].seed
        );
        println!(
            "  replay: {} --shrink --known",
            config.replay_command(report.known[0].seed)
        );
    }
    if !report.late.is_empty() {
        println!(
            "known late loss signal after failing heartbeats (docs/testing.md): {} seeds, first {}",
            report.late.len(),
            report.late[0].seed
        );
        println!(
            "  replay: {} --shrink --late",
            config.replay_command(report.late[0].seed)
        );
    }
    // A known race or a known late loss is still a violation of what the
    // protocol promises: it fails the campaign like any other.
    if report.failures.is_empty() && report.known.is_empty() && report.late.is_empty() {
        println!("no real violation");
        return Ok(true);
    }
    if report.failures.is_empty() {
        println!("no real violation, but known races or late losses (above): failed");
        return Ok(false);
    }
    println!("{} seeds with a real violation:", report.failures.len());
    for failure in report.failures.iter().take(show) {
        println!("  seed {}: {}", failure.seed, failure.violation);
        println!(
            "    replay: {} --shrink",
            config.replay_command(failure.seed)
        );
    }
    Ok(false)
}

fn replay(args: &[String]) -> Result<bool, String> {
    let mut parsed = parse(args, &["--shrink", "--known", "--late"])?;
    let seed = parsed
        .take("--seed")
        .ok_or("replay needs --seed")?
        .parse::<u64>()
        .map_err(|_| "--seed takes a number")?;
    let tape = match parsed.take("--tape") {
        Some(text) => Some(text.parse::<Tape>().map_err(|e| e.to_string())?),
        None => None,
    };
    let do_shrink = parsed.flag("--shrink");
    let known = parsed.flag("--known");
    let late = parsed.flag("--late");
    let invariant = parsed.take("--invariant");
    let config = parsed.done()?;
    let options = RunOptions {
        trace: true,
        record: false,
        replay: tape.clone(),
    };
    let report = run(&config, seed, &options);
    for line in &report.trace {
        println!("{line}");
    }
    println!(
        "seed {seed}: {} steps, {:.3} s of virtual time; {}",
        report.steps,
        report.elapsed.as_secs_f64(),
        report.profile
    );
    let class = match (known, late) {
        (true, _) => Class::KnownRace,
        (_, true) => Class::LateLoss,
        _ => Class::Real,
    };
    let wanted = report
        .violations
        .iter()
        .filter(|v| v.class == class)
        .find(|v| {
            invariant
                .as_deref()
                .is_none_or(|name| v.invariant.name() == name)
        });
    if do_shrink && let Some(target) = wanted.map(Target::like) {
        println!("\nshrinking {}...", target);
        let shrunk = shrink(&config, seed, tape.as_ref(), &target);
        print!("{shrunk}");
    }
    Ok(!report.failed())
}

fn serializer(args: &[String]) -> Result<bool, String> {
    let mut parsed = parse(args, &[])?;
    let seeds = parsed.number("--seeds", 1_000)?;
    let first = parsed.number("--first", 0)?;
    parsed.done()?;
    let report = heldlock_sim::serial::run_serializer_campaign(first, seeds);
    if let Some(f) = report.failures.first() {
        println!("seed {}: {}", f.seed, f.violation);
        for line in heldlock_sim::serial::run_serializer(f.seed, true).trace {
            println!("{line}");
        }
    }
    print!("{report}");
    Ok(report.failures.is_empty())
}
