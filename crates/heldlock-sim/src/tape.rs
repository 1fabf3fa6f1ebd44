//! Every decision of a run (who runs next, which fault, which errno) as one
//! sequence of numbers: the *tape*.
//!
//! A run driven by a seed records its tape; a run driven by a tape replays
//! it, reading `0` once the tape is exhausted. `0` always means the most
//! boring choice (no fault, no jitter, keep running the same task), so a
//! shrinker can simplify a failing run by zeroing entries, and the shrunk
//! tape still replays.

use std::fmt;
use std::str::FromStr;

use crate::rng::SplitMix64;

/// A recorded sequence of decisions; see the [module docs](self).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tape(pub Vec<u64>);

impl Tape {
    /// The number of recorded decisions.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The tape without its trailing zeros (which replay the same).
    pub fn trimmed(mut self) -> Tape {
        while self.0.last() == Some(&0) {
            self.0.pop();
        }
        self
    }
}

/// Compact text: runs of zeros are written `0*N`, entries separated by `,`.
impl fmt::Display for Tape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut i = 0;
        while i < self.0.len() {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if self.0[i] == 0 {
                let start = i;
                while i < self.0.len() && self.0[i] == 0 {
                    i += 1;
                }
                match i - start {
                    1 => f.write_str("0")?,
                    n => write!(f, "0*{n}")?,
                }
            } else {
                write!(f, "{}", self.0[i])?;
                i += 1;
            }
        }
        Ok(())
    }
}

/// A tape that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad tape entry {entry:?}: expected `N` or `0*N`, separated by `,`")]
pub struct TapeParseError {
    /// The entry that did not parse.
    pub entry: String,
}

impl FromStr for Tape {
    type Err = TapeParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = Vec::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = || TapeParseError {
                entry: entry.to_owned(),
            };
            match entry.split_once('*') {
                Some((value, count)) => {
                    let value: u64 = value.parse().map_err(|_| bad())?;
                    let count: usize = count.parse().map_err(|_| bad())?;
                    if count > 10_000_000 {
                        return Err(bad());
                    }
                    out.extend(std::iter::repeat_n(value, count));
                }
                None => out.push(entry.parse().map_err(|_| bad())?),
            }
        }
        Ok(Tape(out))
    }
}

/// Where decisions come from: a seeded generator (recording a tape), or a
/// tape being replayed.
#[derive(Debug)]
pub(crate) enum Decisions {
    /// Fresh decisions from `rng`, recorded into `tape` if it is `Some`.
    Seeded {
        rng: SplitMix64,
        tape: Option<Vec<u64>>,
    },
    /// Decisions read back from a tape; `0` past its end.
    Replay { tape: Vec<u64>, at: usize },
}

impl Decisions {
    pub(crate) fn seeded(rng: SplitMix64, record: bool) -> Self {
        Decisions::Seeded {
            rng,
            tape: record.then(Vec::new),
        }
    }

    pub(crate) fn replay(tape: &Tape) -> Self {
        Decisions::Replay {
            tape: tape.0.clone(),
            at: 0,
        }
    }

    fn record(&mut self, value: u64) -> u64 {
        if let Decisions::Seeded {
            tape: Some(tape), ..
        } = self
        {
            tape.push(value);
        }
        value
    }

    fn read(&mut self) -> u64 {
        match self {
            Decisions::Replay { tape, at } => {
                let value = tape.get(*at).copied().unwrap_or(0);
                *at += 1;
                value
            }
            Decisions::Seeded { .. } => 0,
        }
    }

    /// `true` with probability `ppm` per million (seeded), or as recorded.
    pub(crate) fn chance(&mut self, ppm: u32) -> bool {
        match self {
            Decisions::Seeded { rng, .. } => {
                let hit = rng.chance(ppm);
                self.record(u64::from(hit)) != 0
            }
            Decisions::Replay { .. } => self.read() != 0,
        }
    }

    /// A number in `0..n`, or as recorded (reduced modulo `n`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        match self {
            Decisions::Seeded { rng, .. } => {
                let value = rng.below(n);
                self.record(value)
            }
            Decisions::Replay { .. } => match n {
                0 => {
                    self.read();
                    0
                }
                n => self.read() % n,
            },
        }
    }

    /// A choice among `n` options that a strategy makes when seeded (`pick`
    /// gets the generator), or as recorded.
    pub(crate) fn choose(&mut self, n: u64, pick: impl FnOnce(&mut SplitMix64) -> u64) -> u64 {
        match self {
            Decisions::Seeded { rng, .. } => {
                let value = pick(rng).min(n.saturating_sub(1));
                self.record(value)
            }
            Decisions::Replay { .. } => self.below(n),
        }
    }

    /// The tape recorded so far (empty when not recording).
    pub(crate) fn take_tape(&mut self) -> Tape {
        match self {
            Decisions::Seeded { tape, .. } => Tape(tape.take().unwrap_or_default()),
            Decisions::Replay { tape, .. } => Tape(std::mem::take(tape)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips() {
        let tape = Tape(vec![0, 0, 0, 5, 0, 1, 0, 0]);
        let text = tape.to_string();
        assert_eq!(text, "0*3,5,0,1,0*2");
        assert_eq!(text.parse::<Tape>(), Ok(tape));
        assert!("x".parse::<Tape>().is_err());
    }

    #[test]
    fn a_recorded_tape_replays_the_same_decisions() {
        let mut seeded = Decisions::seeded(SplitMix64::new(3), true);
        let made: Vec<u64> = (0..20)
            .map(|i| match i % 3 {
                0 => u64::from(seeded.chance(500_000)),
                1 => seeded.below(7),
                _ => seeded.choose(4, |r| r.below(4)),
            })
            .collect();
        let tape = seeded.take_tape();
        let mut replay = Decisions::replay(&tape);
        let again: Vec<u64> = (0..20)
            .map(|i| match i % 3 {
                0 => u64::from(replay.chance(1)),
                1 => replay.below(7),
                _ => replay.choose(4, |_| 99),
            })
            .collect();
        assert_eq!(made, again);
        assert_eq!(replay.below(9), 0, "past the end, every decision is 0");
    }
}
