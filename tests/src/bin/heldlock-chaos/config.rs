//! The driver's command line: the flags, their defaults, and the checks
//! that reject a run that could not test what it claims.

use std::path::PathBuf;
use std::time::Duration;

use heldlock_core::LockOptions;

use crate::util::{millis, ms, text};
use crate::worker::worker_options;

#[derive(Debug, Clone)]
pub(super) struct Config {
    pub(super) processes: usize,
    pub(super) seconds: Duration,
    pub(super) stale_ms: u64,
    pub(super) poll_ms: u64,
    pub(super) max_pause_ms: Option<u64>,
    pub(super) takeover_slack_ms: u64,
    pub(super) seed: Option<u64>,
    pub(super) dir: Option<PathBuf>,
    pub(super) keep: bool,
    pub(super) long_pause: bool,
    pub(super) lease_only: bool,
    pub(super) cli: bool,
    pub(super) heldlock: Option<PathBuf>,
    pub(super) linger_one_in: Option<u64>,
}

pub(super) enum Parsed {
    Help,
    Run(Config),
}

impl Config {
    pub(super) fn parse(args: &[String]) -> Result<Parsed, String> {
        let mut config = Config {
            processes: 4,
            seconds: Duration::from_secs(30),
            stale_ms: 1000,
            poll_ms: 10,
            max_pause_ms: None,
            takeover_slack_ms: 2000,
            seed: None,
            dir: None,
            keep: false,
            long_pause: false,
            lease_only: false,
            cli: false,
            heldlock: None,
            linger_one_in: None,
        };
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            let number = |name: &str, text: String| {
                text.parse::<u64>()
                    .map_err(|e| format!("{name} {text:?}: {e}"))
            };
            match flag.as_str() {
                "--help" | "-h" => return Ok(Parsed::Help),
                "--processes" => {
                    let n = number(flag, value(flag)?)?;
                    config.processes = usize::try_from(n).map_err(text)?;
                }
                "--seconds" => {
                    let raw = value(flag)?;
                    let secs: f64 = raw.parse().map_err(|e| format!("--seconds {raw:?}: {e}"))?;
                    config.seconds = Duration::try_from_secs_f64(secs)
                        .map_err(|e| format!("--seconds {raw:?}: {e}"))?;
                }
                "--stale-ms" => config.stale_ms = number(flag, value(flag)?)?,
                "--poll-ms" => config.poll_ms = number(flag, value(flag)?)?,
                "--max-pause-ms" => config.max_pause_ms = Some(number(flag, value(flag)?)?),
                "--takeover-slack-ms" => config.takeover_slack_ms = number(flag, value(flag)?)?,
                "--seed" => config.seed = Some(number(flag, value(flag)?)?),
                "--dir" => config.dir = Some(PathBuf::from(value(flag)?)),
                "--keep" => config.keep = true,
                "--long-pause" => config.long_pause = true,
                "--lease-only" => config.lease_only = true,
                "--cli" => config.cli = true,
                "--heldlock" => config.heldlock = Some(PathBuf::from(value(flag)?)),
                "--linger-one-in" => config.linger_one_in = Some(number(flag, value(flag)?)?),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        if !(1..=64).contains(&config.processes) {
            return Err(format!(
                "--processes must be 1 to 64, got {}",
                config.processes
            ));
        }
        if config.cli && (config.long_pause || config.lease_only) {
            return Err(
                "--cli drives the heldlock command: not with --long-pause or --lease-only".into(),
            );
        }
        if !config.cli && (config.heldlock.is_some() || config.linger_one_in.is_some()) {
            return Err("--heldlock and --linger-one-in go with --cli".into());
        }
        if config.seconds > Duration::from_secs(24 * 3600) {
            return Err("--seconds must be at most one day".into());
        }
        if !(50..=600_000).contains(&config.stale_ms) {
            return Err(format!(
                "--stale-ms must be 50 to 600000, got {}",
                config.stale_ms
            ));
        }
        if config.poll_ms == 0 || config.poll_ms > config.stale_ms {
            return Err("--poll-ms must be more than 0 and at most --stale-ms".into());
        }
        let timing = config.timing()?;
        let bound = timing.stale.saturating_sub(timing.heartbeat);
        if let Some(max) = config.max_pause_ms
            && (max == 0 || ms(max) >= bound)
        {
            return Err(format!(
                "--max-pause-ms must be more than 0 and below stale - heartbeat ({} ms)",
                millis(bound)
            ));
        }
        Ok(Parsed::Run(config))
    }

    fn options(&self) -> LockOptions {
        worker_options(self.stale_ms, self.poll_ms)
    }

    pub(super) fn timing(&self) -> Result<heldlock_core::Timing, String> {
        self.options().validate().map_err(text)
    }

    /// The lock kind argument of the workers.
    pub(super) fn kind(&self) -> &'static str {
        if self.lease_only { "lease" } else { "file" }
    }

    pub(super) fn describe(&self) -> &'static str {
        if self.lease_only {
            "lease only (no liveness probe)"
        } else {
            "FileLock (same-host liveness probe)"
        }
    }
}
