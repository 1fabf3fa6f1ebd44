//! `heldlock break`: remove a stale lock (or, with `--force`, a fresh one)
//! through the safe protocol: inspect, judge, then
//! `break_if_unchanged(observed)`, which removes the lock only if it is still
//! exactly the one inspected.

use std::time::SystemTime;

use heldlock::backend::{Broke, FsBackend};
use heldlock::{Inspection, LockBackend};

use crate::cli::{self, BreakArgs};
use crate::duration::show;
use crate::exit::{self, CliError};
use crate::holder::View;
use crate::json;

/// How a `break` ended, short of an error.
struct Outcome {
    /// Its name in JSON: `broken`, `free`, `refused` or `changed`.
    result: &'static str,
    /// The lock as inspected before breaking it (`None`: it was free).
    view: Option<View>,
    /// The exit code.
    code: u8,
}

/// Runs `heldlock break`; returns 0 when the lock was broken or already
/// free, 1 when breaking was refused (fresh, no `--force`) or the lock
/// changed between the look and the break. With `--json`, prints one JSON
/// object in every outcome, errors included.
///
/// # Errors
///
/// [`CliError::Usage`] for a bad lock path (exit 64); [`CliError::Query`]
/// when a step failed (a directory or a non-lock at the lock path without
/// `--force`, an I/O error: exit 2).
pub(crate) async fn break_lock(args: BreakArgs) -> Result<u8, CliError> {
    let shown = args.lock.to_string_lossy().into_owned();
    let result = break_it(&args, &shown).await;
    if args.json {
        let object = match &result {
            Ok(outcome) => json::breaking(
                Some(&shown),
                outcome.result,
                Some(args.force),
                None,
                outcome.view.as_ref(),
                args.stale,
            ),
            Err(error) => json::breaking(
                Some(&shown),
                "error",
                Some(args.force),
                Some(&error.to_string()),
                None,
                args.stale,
            ),
        };
        outln!("{object}");
    }
    result.map(|outcome| outcome.code)
}

/// Inspects, judges and breaks; prints text unless `--json`.
async fn break_it(args: &BreakArgs, shown: &str) -> Result<Outcome, CliError> {
    let text = !args.json;
    let path = cli::lock_path(&args.lock)?;
    let backend = FsBackend::new(&path).map_err(|error| CliError::Usage(error.to_string()))?;
    // Without --force, only a lock is ever broken: anything else at the
    // path is refused by `inspect` with what it is.
    let looked = if args.force {
        backend.inspect_anything().await
    } else {
        backend.inspect().await
    };
    let observed = match looked {
        Ok(Inspection::Present(observed)) => observed,
        Ok(Inspection::Absent) => {
            if text {
                outln!("{shown}: already free");
            }
            return Ok(Outcome {
                result: "free",
                view: None,
                code: exit::SUCCESS,
            });
        }
        Err(error) => return Err(CliError::Query(error.into())),
    };
    let view = View::new(&observed, SystemTime::now());
    let held_for = view.held_for(args.stale);
    if !view.is_stale(args.stale) {
        if !args.force {
            errln!(
                "heldlock: refused to break {shown}: it is fresh, held by {held_for}; \
                 wait for it to go stale or use --force"
            );
            return Ok(Outcome {
                result: "refused",
                view: Some(view),
                code: exit::FAILURE,
            });
        }
        if text {
            outln!(
                "{shown}: breaking a fresh lock (--force), held by {held_for}; owner {}",
                view.record
                    .as_ref()
                    .map_or_else(|| "unknown".to_owned(), |r| r.owner.to_string())
            );
        }
    }
    if !observed.breakable && text {
        outln!(
            "{shown}: removing something that heldlock cannot tell from a lock (--force): {}",
            view.who()
        );
    }
    let broke = if args.force {
        backend.break_anything(&observed).await
    } else {
        backend.break_if_unchanged(&observed).await
    };
    let (result, code) = match broke {
        Ok(Broke::Broken) => {
            if text {
                outln!(
                    "{shown}: broken (was held by {}, not refreshed for {})",
                    view.who(),
                    show(view.age)
                );
            }
            ("broken", exit::SUCCESS)
        }
        Ok(Broke::Absent) => {
            if text {
                outln!("{shown}: already free (released meanwhile)");
            }
            ("free", exit::SUCCESS)
        }
        Ok(Broke::Changed) => {
            errln!(
                "heldlock: did not break {shown}: it changed since it was inspected \
                 (refreshed, rewritten or replaced); run the command again to judge it anew"
            );
            ("changed", exit::FAILURE)
        }
        Err(error) => return Err(CliError::Query(error.into())),
    };
    Ok(Outcome {
        result,
        view: Some(view),
        code,
    })
}
