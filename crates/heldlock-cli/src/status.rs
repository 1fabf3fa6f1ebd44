//! `heldlock status`: is the lock free, and if not, who holds it.

use std::time::SystemTime;

use heldlock::backend::FsBackend;
use heldlock::{Inspection, LockBackend};
use serde_json::{Map, Value, json};

use crate::cli::{self, StatusArgs};
use crate::duration::{show, timestamp};
use crate::exit::{self, CliError};
use crate::holder::View;

/// Runs `heldlock status`; returns 0 when the lock is free, 1 when held.
///
/// # Errors
///
/// [`CliError::Usage`] for a bad lock path; [`CliError::Lock`] when the
/// lock cannot be inspected (a directory at the lock path, an I/O error).
pub(crate) async fn status(args: StatusArgs) -> Result<u8, CliError> {
    let path = cli::lock_path(&args.lock)?;
    let backend = FsBackend::new(&path).map_err(|error| CliError::Usage(error.to_string()))?;
    let inspection = backend
        .inspect()
        .await
        .map_err(|error| CliError::Lock(error.into()))?;
    let shown = path.display().to_string();
    let Inspection::Present(observed) = inspection else {
        if args.json {
            outln!("{}", json!({ "lock": shown, "state": "free" }));
        } else {
            outln!("{shown}: free");
        }
        return Ok(exit::SUCCESS);
    };
    let view = View::new(&observed, SystemTime::now());
    if args.json {
        outln!("{}", to_json(&shown, &view, &args));
    } else {
        print_text(&shown, &view, &args);
    }
    Ok(exit::FAILURE)
}

/// The JSON object for a held lock.
fn to_json(shown: &str, view: &View, args: &StatusArgs) -> Value {
    let record = view.record.as_ref();
    let fields: Map<String, Value> = record
        .map(|record| {
            record
                .fields
                .iter()
                .map(|(key, value)| (key.clone(), Value::from(value.as_str())))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "lock": shown,
        "state": "held",
        "pid": record.map(|record| record.pid),
        "owner": record.map(|record| record.owner.as_str()),
        "host": view.host(),
        "acquired_at": record.and_then(|record| timestamp(record.acquired_at)),
        "refreshed_at": timestamp(view.refreshed_at),
        "age_ms": u64::try_from(view.age.as_millis()).unwrap_or(u64::MAX),
        "stamp_in_future": view.stamp_in_future,
        "stale": view.is_stale(args.stale),
        "stale_after_ms": u64::try_from(view.stale_after(args.stale).as_millis()).unwrap_or(u64::MAX),
        "kernel_held": view.kernel_held,
        "format": view.format().name(),
        "fields": fields,
        "summary": view.summary,
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
    let stale = if view.kernel_held {
        "no (a live process on this host holds its kernel lock: the holder, \
         or a command that outlived it)"
            .to_owned()
    } else if !view.breakable {
        "no (unreadable: heldlock cannot tell it from a file and never breaks it)".to_owned()
    } else if view.is_stale(args.stale) {
        format!("yes (not refreshed for more than {})", show(stale_after))
    } else {
        format!("no (stale after {} without refresh)", show(stale_after))
    };
    outln!("  stale:  {stale}");
    outln!("  format: {}", view.format().describe());
    if let Some(summary) = &view.summary {
        outln!("  what:   {summary:?}");
    }
}
