//! The log lines on stderr: a `tracing` subscriber whose level `-v` raises
//! and `RUST_LOG` overrides, writing one line per event in the shape of
//! heldlock's other messages: `heldlock: warning: broke a stale lock
//! resource=... holder.pid=...`.
//!
//! | flags | level |
//! | --- | --- |
//! | none | `warn`: a stale lock broken, a lock lost, the library's warnings |
//! | `-v` | `info`: also what `run` does (acquired, the command's end, released) |
//! | `-vv` | `debug`: also the library's steps, inside its `acquire`, `hold` and `release` spans |
//! | `-vvv` | `trace`: everything |
//!
//! `RUST_LOG` directives (`heldlock_fs=trace`, `off`) are applied after the
//! level of the flags, so they win wherever they apply. Nothing is logged
//! on stdout: `--json` output stays one object.

use std::fmt;
use std::io;
use std::sync::{Mutex, PoisonError};

use indicatif::ProgressBar;
use tracing::level_filters::LevelFilter;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Directive;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The spinner on screen, if any: log lines are written while it is
/// hidden, so that they do not run into its line.
static SPINNER: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Installs the subscriber for `verbosity` (the number of `-v`s) and the
/// environment's `RUST_LOG`. Invalid `RUST_LOG` directives are ignored with
/// a warning.
pub(crate) fn install(verbosity: u8) {
    let subscriber = tracing_subscriber::fmt()
        .event_format(Line)
        .with_writer(|| Stderr);
    // Only fails if a subscriber was installed already, which would be a
    // bug of ours; the program works without logs.
    let _ = match std::env::var("RUST_LOG") {
        // The flags' level alone: a plain level filter, cheaper to build
        // and to ask than an `EnvFilter` (every run of heldlock sets one
        // up, most without RUST_LOG).
        Err(_) => tracing::subscriber::set_global_default(
            subscriber.with_max_level(level(verbosity)).finish(),
        ),
        Ok(rust_log) => tracing::subscriber::set_global_default(
            subscriber
                .with_env_filter(filter(verbosity, Some(&rust_log)))
                .finish(),
        ),
    };
}

/// The level of `verbosity`.
fn level(verbosity: u8) -> LevelFilter {
    match verbosity {
        0 => LevelFilter::WARN,
        1 => LevelFilter::INFO,
        2 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

/// The level of `verbosity`, then the directives of `rust_log`.
fn filter(verbosity: u8, rust_log: Option<&str>) -> EnvFilter {
    let mut filter = EnvFilter::default().add_directive(level(verbosity).into());
    for part in rust_log
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
    {
        match part.parse::<Directive>() {
            Ok(directive) => filter = filter.add_directive(directive),
            Err(error) => errln!("heldlock: warning: ignoring `{part}` in RUST_LOG: {error}"),
        }
    }
    filter
}

/// Tells the log writer which spinner is on screen (`None`: none).
pub(crate) fn spinner_shown(bar: Option<&ProgressBar>) {
    *SPINNER.lock().unwrap_or_else(PoisonError::into_inner) = bar.cloned();
}

/// stderr, around the spinner; write errors are ignored, as by `errln!`.
struct Stderr;

impl io::Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let write = || {
            let _ = io::stderr().lock().write_all(buf);
        };
        let spinner = SPINNER
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match spinner {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        Ok(())
    }
}

/// One line per event: `heldlock: <level>: <spans>: <message> <fields>`,
/// each span as `name{fields}`. No time stamps and no colours: the lines
/// read like heldlock's other messages.
struct Line;

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = match *event.metadata().level() {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        write!(writer, "heldlock: {level}: ")?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                write!(writer, "{}", span.name())?;
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    write!(writer, "{{{fields}}}")?;
                }
                write!(writer, ": ")?;
            }
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_set_the_level_and_rust_log_wins_where_it_applies() {
        let shown = |verbosity, rust_log| filter(verbosity, rust_log).to_string();
        assert_eq!(shown(0, None), "warn");
        assert_eq!(shown(1, None), "info");
        assert_eq!(shown(2, None), "debug");
        assert_eq!(shown(9, None), "trace");
        assert_eq!(shown(0, Some("")), "warn");
        // A bare level replaces the flags' level.
        assert_eq!(shown(2, Some("off")), "off");
        // A directive for a target raises or lowers that target alone;
        // the flags' level stays for the rest.
        assert_eq!(
            shown(0, Some(" heldlock_fs=trace,")),
            "heldlock_fs=trace,warn"
        );
        assert_eq!(shown(0, Some("other=debug")), "other=debug,warn");
        // An invalid directive is ignored (with a warning on stderr).
        assert_eq!(shown(1, Some("heldlock=loud")), "info");
    }
}
