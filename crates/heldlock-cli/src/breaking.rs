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

/// Runs `heldlock break`; returns 0 when the lock was broken or already
/// free, 1 when breaking was refused (fresh, no `--force`) or the lock
/// changed between the look and the break.
///
/// # Errors
///
/// [`CliError::Usage`] for a bad lock path; [`CliError::Lock`] when a step
/// failed (a directory at the lock path, an I/O error).
pub(crate) async fn break_lock(args: BreakArgs) -> Result<u8, CliError> {
    let path = cli::lock_path(&args.lock)?;
    let shown = path.display().to_string();
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
            outln!("{shown}: already free");
            return Ok(exit::SUCCESS);
        }
        Err(error) => return Err(CliError::Lock(error.into())),
    };
    let view = View::new(&observed, SystemTime::now());
    let held_for = view.held_for(args.stale);
    if !view.is_stale(args.stale) {
        if !args.force {
            errln!(
                "heldlock: refused to break {shown}: it is fresh, held by {held_for}; \
                 wait for it to go stale or use --force"
            );
            return Ok(exit::FAILURE);
        }
        outln!(
            "{shown}: breaking a fresh lock (--force), held by {held_for}; owner {}",
            view.record
                .as_ref()
                .map_or_else(|| "unknown".to_owned(), |r| r.owner.to_string())
        );
    }
    if !observed.breakable {
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
    match broke {
        Ok(Broke::Broken) => {
            outln!(
                "{shown}: broken (was held by {}, not refreshed for {})",
                view.who(),
                show(view.age)
            );
            Ok(exit::SUCCESS)
        }
        Ok(Broke::Absent) => {
            outln!("{shown}: already free (released meanwhile)");
            Ok(exit::SUCCESS)
        }
        Ok(Broke::Changed) => {
            errln!(
                "heldlock: did not break {shown}: it changed since it was inspected \
                 (refreshed, rewritten or replaced); run the command again to judge it anew"
            );
            Ok(exit::FAILURE)
        }
        Err(error) => Err(CliError::Lock(error.into())),
    }
}
