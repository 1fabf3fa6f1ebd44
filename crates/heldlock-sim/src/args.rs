//! The command-line form of a [`SimConfig`], shared by the `heldlock-sim`
//! binary, `cargo xtask sim` and the replay commands that failing runs print.

use std::time::Duration;

use crate::config::{Faults, SimConfig, Skew, Strategy};

/// A command line that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArgsError {
    /// An option this tool does not know.
    #[error("unknown option {option:?}; run with --help for the list")]
    Unknown {
        /// The option.
        option: String,
    },
    /// An option without its value.
    #[error("option {option} needs a value")]
    Missing {
        /// The option.
        option: String,
    },
    /// A value that does not fit its option.
    #[error("bad value {value:?} for {option}: {expected}")]
    Bad {
        /// The option.
        option: String,
        /// The value given.
        value: String,
        /// What the option takes.
        expected: &'static str,
    },
}

/// The safeguard names `--safeguard-off` takes.
pub const SAFEGUARD_NAMES: [&str; 7] = [
    "release-precheck",
    "reverify-before-break",
    "restore-rename-back",
    "restore-unlink",
    "inode-ownership",
    "recheck-after-rename",
    "break-marker",
];

/// Help text for the configuration options.
pub const CONFIG_HELP: &str = "  --contenders N         contenders (default 3)
  --hosts N              hosts the contenders are spread over (default 1): each its own
                         device numbers, wall clock, host and boot identity, kernel locks,
                         and (some seeds) files that other hosts cannot read
  --rounds N             acquire/critical section/release rounds per contender (default 2)
  --faults LIST          crash,pause,long-pause,io,clock,intruder | all | none (default all)
  --fault-rate PERCENT   fault rates in percent of the defaults (default 100)
  --skew MODE            auto | none | within | beyond | rule-off (default auto)
  --strategy S           auto | random | pct (default auto)
  --initial-lock X       auto | yes | no: a dead process's stale lock at the start
  --stale-ms N           the lock's stale (default 1000); poll 50 ms, max_wait 5 s
  --mixed-stale yes|no   odd-numbered contenders use a quarter of the stale (default no)
  --declared-stale-cap-ms N
                         every contender's max_declared_stale (default: the library's)
  --step-limit N         steps before a run counts as stuck (default 200000)
  --io-heartbeat-only X  yes | no: inject I/O errors into heartbeat refreshes only
  --safeguard-off NAME   turn one protocol safeguard off (repeatable): release-precheck,
                         reverify-before-break, restore-rename-back, restore-unlink,
                         inode-ownership, recheck-after-rename, break-marker";

impl SimConfig {
    /// Applies one option (`--name value`) to the configuration. Returns
    /// `Ok(false)` if `option` is not a configuration option.
    ///
    /// # Errors
    ///
    /// [`ArgsError`] when the value is missing or does not fit.
    pub fn apply_arg(&mut self, option: &str, value: Option<&str>) -> Result<bool, ArgsError> {
        let known = [
            "--contenders",
            "--hosts",
            "--rounds",
            "--faults",
            "--fault-rate",
            "--skew",
            "--strategy",
            "--initial-lock",
            "--stale-ms",
            "--step-limit",
            "--safeguard-off",
            "--io-heartbeat-only",
            "--mixed-stale",
            "--declared-stale-cap-ms",
        ];
        if !known.contains(&option) {
            return Ok(false);
        }
        let value = value.ok_or_else(|| ArgsError::Missing {
            option: option.to_owned(),
        })?;
        let bad = |expected| ArgsError::Bad {
            option: option.to_owned(),
            value: value.to_owned(),
            expected,
        };
        let number = |expected| value.parse::<u64>().map_err(|_| bad(expected));
        match option {
            "--contenders" => {
                self.contenders = usize::try_from(number("a number from 1 to 64")?)
                    .ok()
                    .filter(|n| (1..=64).contains(n))
                    .ok_or_else(|| bad("a number from 1 to 64"))?;
            }
            "--hosts" => {
                self.hosts = usize::try_from(number("a number from 1 to 16")?)
                    .ok()
                    .filter(|n| (1..=16).contains(n))
                    .ok_or_else(|| bad("a number from 1 to 16"))?;
            }
            "--rounds" => {
                self.rounds = usize::try_from(number("a number from 1 to 100")?)
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| bad("a number from 1 to 100"))?;
            }
            "--faults" => {
                self.faults = Faults::parse(value)
                    .ok_or_else(|| bad("crash,pause,long-pause,io,clock,intruder | all | none"))?
            }
            "--fault-rate" => {
                self.fault_rate =
                    u32::try_from(number("a percentage")?).map_err(|_| bad("a percentage"))?;
            }
            "--skew" => {
                self.skew = Skew::parse(value)
                    .ok_or_else(|| bad("auto | none | within | beyond | rule-off"))?
            }
            "--strategy" => {
                self.strategy = Strategy::parse(value).ok_or_else(|| bad("auto | random | pct"))?
            }
            "--initial-lock" => {
                self.initial_lock = match value {
                    "auto" => None,
                    "yes" => Some(true),
                    "no" => Some(false),
                    _ => return Err(bad("auto | yes | no")),
                }
            }
            "--stale-ms" => {
                let ms = number("milliseconds, at least 100")?;
                if ms < 100 {
                    return Err(bad("milliseconds, at least 100"));
                }
                self.stale = Duration::from_millis(ms);
            }
            "--step-limit" => self.step_limit = number("a number of steps")?,
            "--io-heartbeat-only" => {
                self.io_heartbeat_only = match value {
                    "yes" => true,
                    "no" => false,
                    _ => return Err(bad("yes | no")),
                }
            }
            "--mixed-stale" => {
                self.mixed_stale = match value {
                    "yes" => true,
                    "no" => false,
                    _ => return Err(bad("yes | no")),
                }
            }
            "--declared-stale-cap-ms" => {
                let ms = number("milliseconds, at least 1")?;
                if ms == 0 {
                    return Err(bad("milliseconds, at least 1"));
                }
                self.declared_stale_cap = Some(Duration::from_millis(ms));
            }
            "--safeguard-off" => self.safeguard_off(value).ok_or_else(|| {
                bad(if cfg!(feature = "safeguard-switches") {
                    "one of the safeguard names in --help"
                } else {
                    "a build with the safeguard-switches feature (`cargo xtask sim` builds one)"
                })
            })?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    #[cfg(feature = "safeguard-switches")]
    fn safeguard_off(&mut self, name: &str) -> Option<()> {
        use heldlock_fs::Restore;
        let s = &mut self.safeguards;
        match name {
            "release-precheck" => s.release_precheck = false,
            "reverify-before-break" => s.reverify_before_break = false,
            "restore-rename-back" => s.restore = Restore::RenameBack,
            "restore-unlink" => s.restore = Restore::Unlink,
            "inode-ownership" => s.inode_ownership = false,
            "recheck-after-rename" => s.recheck_after_rename = false,
            "break-marker" => s.break_marker = false,
            _ => return None,
        }
        Some(())
    }

    #[cfg(not(feature = "safeguard-switches"))]
    fn safeguard_off(&mut self, _name: &str) -> Option<()> {
        None
    }

    /// The safeguards turned off, by name.
    pub fn safeguards_off(&self) -> Vec<&'static str> {
        #[cfg(feature = "safeguard-switches")]
        {
            use heldlock_fs::Restore;
            let s = &self.safeguards;
            let mut off = Vec::new();
            if !s.release_precheck {
                off.push("release-precheck");
            }
            if !s.reverify_before_break {
                off.push("reverify-before-break");
            }
            match s.restore {
                Restore::Link => {}
                Restore::RenameBack => off.push("restore-rename-back"),
                Restore::Unlink => off.push("restore-unlink"),
            }
            if !s.inode_ownership {
                off.push("inode-ownership");
            }
            if !s.recheck_after_rename {
                off.push("recheck-after-rename");
            }
            if !s.break_marker {
                off.push("break-marker");
            }
            off
        }
        #[cfg(not(feature = "safeguard-switches"))]
        Vec::new()
    }

    /// The options that reproduce this configuration (defaults omitted).
    pub fn to_args(&self) -> String {
        let default = SimConfig::default();
        let mut out = vec![format!("--contenders {}", self.contenders)];
        if self.rounds != default.rounds {
            out.push(format!("--rounds {}", self.rounds));
        }
        if self.faults != default.faults {
            out.push(format!("--faults {}", self.faults.names()));
        }
        if self.hosts != default.hosts {
            out.push(format!("--hosts {}", self.hosts));
        }
        if self.fault_rate != default.fault_rate {
            out.push(format!("--fault-rate {}", self.fault_rate));
        }
        if self.skew != default.skew {
            out.push(format!("--skew {}", self.skew.name()));
        }
        if self.strategy != default.strategy {
            out.push(format!("--strategy {}", self.strategy.name()));
        }
        if let Some(lock) = self.initial_lock {
            out.push(format!(
                "--initial-lock {}",
                if lock { "yes" } else { "no" }
            ));
        }
        if self.stale != default.stale {
            out.push(format!("--stale-ms {}", self.stale.as_millis()));
        }
        if self.io_heartbeat_only {
            out.push("--io-heartbeat-only yes".to_owned());
        }
        if self.mixed_stale {
            out.push("--mixed-stale yes".to_owned());
        }
        if let Some(cap) = self.declared_stale_cap {
            out.push(format!("--declared-stale-cap-ms {}", cap.as_millis()));
        }
        if self.step_limit != default.step_limit {
            out.push(format!("--step-limit {}", self.step_limit));
        }
        for name in self.safeguards_off() {
            out.push(format!("--safeguard-off {name}"));
        }
        out.join(" ")
    }

    /// The one-line command that replays `seed` of this configuration.
    pub fn replay_command(&self, seed: u64) -> String {
        format!("cargo xtask sim replay --seed {seed} {}", self.to_args())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_round_trip() {
        let mut config = SimConfig::default();
        let mut options = vec![
            ("--contenders", "4"),
            ("--hosts", "2"),
            ("--faults", "crash,io"),
            ("--skew", "rule-off"),
            ("--strategy", "pct"),
            ("--initial-lock", "yes"),
            ("--mixed-stale", "yes"),
            ("--declared-stale-cap-ms", "250"),
        ];
        if cfg!(feature = "safeguard-switches") {
            options.push(("--safeguard-off", "restore-unlink"));
        } else {
            // Without the switches built in, it says what build is needed.
            let refused = config.apply_arg("--safeguard-off", Some("restore-unlink"));
            assert!(
                matches!(&refused, Err(ArgsError::Bad { expected, .. }) if expected.contains("safeguard-switches")),
                "{refused:?}"
            );
        }
        for (option, value) in options {
            assert_eq!(config.apply_arg(option, Some(value)), Ok(true));
        }
        let text = config.to_args();
        let mut again = SimConfig::default();
        let words: Vec<&str> = text.split(' ').collect();
        for pair in words.chunks(2) {
            assert_eq!(
                again.apply_arg(pair[0], pair.get(1).copied()),
                Ok(true),
                "{text}"
            );
        }
        assert_eq!(again.to_args(), text);
        assert_eq!(config.apply_arg("--nope", None), Ok(false));
        assert!(config.apply_arg("--contenders", Some("0")).is_err());
    }
}
