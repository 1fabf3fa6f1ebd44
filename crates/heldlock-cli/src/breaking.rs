//! `heldlock break`: remove a stale lock (or, with `--force`, a fresh one)
//! through the safe protocol: inspect, judge, then
//! `break_if_unchanged(observed)`, which removes the lock only if it is still
//! exactly the one inspected.

use std::time::SystemTime;

use heldlock::backend::{Broke, FsBackend, Observed};
use heldlock::{BackendError, Inspection, LockBackend};

use crate::cli::BreakArgs;
use crate::duration::show;
use crate::exit::{self, CliError};
use crate::holder::View;
use crate::json;
use crate::target::{self, Target};

/// The backend a `break` works through (one per run: its size matters
/// not).
#[allow(clippy::large_enum_variant)]
enum Breaker {
    File(FsBackend),
    #[cfg(feature = "etcd")]
    Etcd(heldlock::etcd::EtcdBackend),
}

impl Breaker {
    /// One look: with `force`, a file backend reports whatever stands at
    /// the path (a non-lock too).
    async fn look(&self, force: bool) -> Result<Inspection, BackendError> {
        match self {
            Breaker::File(backend) if force => backend.inspect_anything().await,
            Breaker::File(backend) => backend.inspect().await,
            #[cfg(feature = "etcd")]
            Breaker::Etcd(backend) => backend.inspect().await,
        }
    }

    /// Removes `observed` if it is still exactly what is there (on etcd:
    /// the key with the observed create and mod revisions).
    async fn break_it(&self, observed: &Observed, force: bool) -> Result<Broke, BackendError> {
        match self {
            Breaker::File(backend) if force => backend.break_anything(observed).await,
            Breaker::File(backend) => backend.break_if_unchanged(observed).await,
            #[cfg(feature = "etcd")]
            Breaker::Etcd(backend) => backend.break_if_unchanged(observed).await,
        }
    }

    /// Whether it is an etcd lock.
    fn leased(&self) -> bool {
        match self {
            Breaker::File(_) => false,
            #[cfg(feature = "etcd")]
            Breaker::Etcd(_) => true,
        }
    }
}

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
    let backend = match target::parse(&args.lock)? {
        Target::File(path) => Breaker::File(
            FsBackend::new(&path).map_err(|error| CliError::Usage(error.to_string()))?,
        ),
        #[cfg(feature = "etcd")]
        Target::Etcd(etcd) => Breaker::Etcd(crate::etcd::backend(&etcd, &args.etcd, shown).await?),
    };
    // Without --force, only a lock is ever broken: anything else at the
    // path is refused by `inspect` with what it is.
    let looked = backend.look(args.force).await;
    let observed = match looked {
        Ok(Inspection::Present(observed)) => observed,
        // Absent (or a state this version does not know): nothing to break.
        Ok(_) => {
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
    let view = View::new(&observed, SystemTime::now()).leased(backend.leased());
    let held_for = view.held_for(args.stale);
    if !view.is_stale(args.stale) {
        if !args.force && view.leased {
            errln!(
                "heldlock: refused to break {shown}: {} holds it under a live etcd lease \
                 (etcd removes it once its holder stops renewing); use --force to delete it now",
                view.who()
            );
            return Ok(Outcome {
                result: "refused",
                view: Some(view),
                code: exit::FAILURE,
            });
        }
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
    if !observed.breakable && !view.leased && text {
        outln!(
            "{shown}: removing something that heldlock cannot tell from a lock (--force): {}",
            view.who()
        );
    }
    let broke = backend.break_it(&observed, args.force).await;
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
        // Changed (or an answer this version does not know): not broken.
        Ok(_) => {
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
