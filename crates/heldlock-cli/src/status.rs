//! `heldlock status`: is the lock free, and if not, who holds it.

use std::time::SystemTime;

use heldlock::backend::FsBackend;
use heldlock::{Inspection, LockBackend};

use crate::cli::StatusArgs;
use crate::duration::{show, timestamp};
use crate::exit::{self, CliError};
use crate::holder::View;
use crate::json;
use crate::target::{self, Target};

/// Runs `heldlock status`; returns 0 when the lock is free, 1 when held.
/// With `--json`, prints one JSON object in every outcome, errors included.
///
/// # Errors
///
/// [`CliError::Usage`] for a bad lock path (exit 64); [`CliError::Query`]
/// when the lock cannot be inspected (a directory or a non-lock at the lock
/// path, an I/O error: exit 2).
pub(crate) async fn status(args: StatusArgs) -> Result<u8, CliError> {
    let shown = args.lock.to_string_lossy().into_owned();
    let result = inspect(&args).await;
    if args.json {
        let object = match &result {
            Ok(None) => json::status(Some(&shown), "free", None, None, args.stale),
            Ok(Some(view)) => json::status(Some(&shown), "held", None, Some(view), args.stale),
            Err(error) => json::status(
                Some(&shown),
                "error",
                Some(&error.to_string()),
                None,
                args.stale,
            ),
        };
        outln!("{object}");
    }
    match result? {
        None => {
            if !args.json {
                outln!("{shown}: free");
            }
            Ok(exit::SUCCESS)
        }
        Some(view) => {
            if !args.json {
                print_text(&shown, &view, &args);
            }
            Ok(exit::FAILURE)
        }
    }
}

/// One look at the lock: `None` when it is free.
async fn inspect(args: &StatusArgs) -> Result<Option<View>, CliError> {
    let (inspection, leased) = match target::parse(&args.lock)? {
        Target::File(path) => {
            let backend =
                FsBackend::new(&path).map_err(|error| CliError::Usage(error.to_string()))?;
            (backend.inspect().await, false)
        }
        #[cfg(feature = "etcd")]
        Target::Etcd(etcd) => {
            let shown = args.lock.to_string_lossy();
            let backend = crate::etcd::backend(&etcd, &args.etcd, &shown).await?;
            (backend.inspect().await, true)
        }
    };
    let inspection = inspection.map_err(|error| CliError::Query(error.into()))?;
    Ok(match inspection {
        Inspection::Present(observed) => {
            Some(View::new(&observed, SystemTime::now()).leased(leased))
        }
        // Absent (or a state this version does not know).
        _ => None,
    })
}

/// The text report for a held lock.
fn print_text(shown: &str, view: &View, args: &StatusArgs) {
    let unknown = || "-".to_owned();
    let record = view.record.as_ref();
    outln!("{shown}: held by {}", view.who());
    outln!(
        "  pid:    {}",
        record.map_or_else(unknown, |r| r.pid.to_string())
    );
    outln!(
        "  owner:  {}",
        record.map_or_else(unknown, |r| r.owner.to_string())
    );
    outln!("  host:   {}", view.host().unwrap_or("- (not recorded)"));
    if let Some(taken) = record.and_then(|r| timestamp(r.acquired_at)) {
        outln!("  taken:  {taken}");
    }
    let age = if view.stamp_in_future {
        "its stamp is in the future of this host's clock".to_owned()
    } else {
        format!("{} since its last refresh", show(view.age))
    };
    outln!("  age:    {age}");
    let stale_after = view.stale_after(args.stale);
    let stale = if view.leased {
        "no (held under an etcd lease: etcd frees it once its holder stops renewing)".to_owned()
    } else if view.kernel_held {
        "no (a live process on this host holds its kernel lock: the holder, \
         or a command that outlived it)"
            .to_owned()
    } else if !view.breakable {
        "no (unreadable: heldlock cannot tell it from a file and never breaks it)".to_owned()
    } else if view.holder_dead {
        "yes (its holder ran on this host and is gone)".to_owned()
    } else if view.is_stale(args.stale) {
        format!("yes (not refreshed for more than {})", show(stale_after))
    } else {
        format!("no (stale after {} without refresh)", show(stale_after))
    };
    outln!("  stale:  {stale}");
    outln!("  format: {}", view.format().describe());
    if let Some(summary) = &view.summary {
        outln!("  what:   \"{summary}\"");
    }
}
