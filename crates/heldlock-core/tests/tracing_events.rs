//! What a held lock tells `tracing`: a stale break is a `WARN` naming the
//! holder it broke; acquired and released are `DEBUG` events in the
//! `acquire` and `release` spans, which name our owner; a loss is one
//! `WARN` naming our owner, and the warning hook still gets it.
//!
//! Each test captures on its own thread (`with_default`), on virtual time.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::executor::block_on;
use heldlock_core::{
    Clock, Holder, Lock, LockOptions, LockRecord, ManualClock, MemoryBackend, OwnerId,
};
use tracing::field::{Field, Visit};
use tracing::{Level, Subscriber, span};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

/// One event as a subscriber saw it.
#[derive(Clone, Debug)]
struct Captured {
    level: Level,
    message: String,
    fields: BTreeMap<String, String>,
    /// The spans it happened in, root first: name and fields.
    spans: Vec<(String, BTreeMap<String, String>)>,
}

impl Captured {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    /// The field `name` of the innermost span called `span`.
    fn span_field(&self, span: &str, name: &str) -> Option<&str> {
        self.spans
            .iter()
            .rev()
            .find(|(n, _)| n == span)
            .and_then(|(_, fields)| fields.get(name))
            .map(String::as_str)
    }
}

#[derive(Clone, Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

/// A layer that keeps every event with its spans' fields.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Captured>>>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<Fields>()
        {
            values.record(fields);
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let message = fields.0.remove("message").unwrap_or_default();
        let spans = ctx
            .event_scope(event)
            .map(|scope| {
                scope
                    .from_root()
                    .map(|span| {
                        let fields = span
                            .extensions()
                            .get::<Fields>()
                            .cloned()
                            .unwrap_or_default();
                        (span.name().to_owned(), fields.0)
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.0.lock().unwrap().push(Captured {
            level: *event.metadata().level(),
            message,
            fields: fields.0,
            spans,
        });
    }
}

impl Capture {
    /// Runs `body` with this layer as the thread's subscriber.
    fn run<T>(&self, body: impl FnOnce() -> T) -> T {
        let subscriber = tracing_subscriber::registry().with(self.clone());
        tracing::subscriber::with_default(subscriber, body)
    }

    fn events(&self) -> Vec<Captured> {
        self.0.lock().unwrap().clone()
    }

    fn with_message(&self, message: &str) -> Vec<Captured> {
        self.events()
            .into_iter()
            .filter(|event| event.message == message)
            .collect()
    }
}

const STALE: Duration = Duration::from_secs(30);

fn lock_on(backend: &MemoryBackend, clock: &ManualClock, options: LockOptions) -> Lock {
    Lock::new(Arc::new(backend.clone()), Arc::new(clock.clone()), options).unwrap()
}

#[test]
fn a_stale_break_is_a_warning_naming_the_broken_holder() {
    let clock = ManualClock::new();
    let shared = MemoryBackend::new("events/stale.lock");
    let dead_owner = OwnerId::from_record("0b6c6a8e-6a8f-4d0e-9f1e-2a7d3c1b5e4f").unwrap();
    let last_beat = clock.now() - Duration::from_secs(60);
    shared.replace(
        Holder::Record(
            LockRecord::new(4242, dead_owner.clone(), last_beat)
                .with_fields([("host", "elsewhere")]),
        ),
        last_beat,
    );
    let lock = lock_on(&shared, &clock, LockOptions::new(STALE));
    let capture = Capture::default();
    let ours = capture.run(|| {
        block_on(async {
            let held = lock.acquire().await.unwrap();
            let ours = held.owner().clone();
            held.release().await.unwrap();
            ours
        })
    });

    let broke = capture.with_message("broke a stale lock");
    assert_eq!(broke.len(), 1, "{:#?}", capture.events());
    let broke = &broke[0];
    assert_eq!(broke.level, Level::WARN);
    assert_eq!(broke.field("resource"), Some("memory:events/stale.lock"));
    assert_eq!(broke.field("holder.pid"), Some("4242"));
    assert_eq!(broke.field("holder.host"), Some("elsewhere"));
    assert_eq!(broke.field("holder.owner"), Some(dead_owner.as_str()));
    assert_eq!(broke.field("age"), Some("1min"));
    assert_eq!(broke.field("reason"), Some("old_stamp"));
    assert_eq!(broke.span_field("acquire", "owner"), Some(ours.as_str()));

    let acquired = capture.with_message("acquired");
    assert_eq!(acquired.len(), 1, "{:#?}", capture.events());
    assert_eq!(acquired[0].level, Level::DEBUG);
    assert_eq!(acquired[0].field("via"), Some("break"));
    assert!(acquired[0].field("waited").is_some());
    assert_eq!(
        acquired[0].span_field("acquire", "owner"),
        Some(ours.as_str())
    );
    assert_eq!(
        acquired[0].span_field("acquire", "resource"),
        Some("memory:events/stale.lock")
    );

    let released = capture.with_message("released");
    assert_eq!(released.len(), 1, "{:#?}", capture.events());
    assert_eq!(released[0].level, Level::DEBUG);
    assert!(released[0].field("held").is_some());
    assert_eq!(
        released[0].span_field("release", "owner"),
        Some(ours.as_str())
    );
    // Nothing else was worth a warning.
    let warnings = capture
        .events()
        .into_iter()
        .filter(|event| event.level <= Level::WARN)
        .count();
    assert_eq!(warnings, 1, "{:#?}", capture.events());
}

#[test]
fn a_loss_is_one_warning_with_our_owner_and_the_hook_still_hears_it() {
    let clock = ManualClock::new();
    let shared = MemoryBackend::new("events/lost.lock");
    let heard = Arc::new(Mutex::new(Vec::new()));
    let options = LockOptions::new(STALE).on_warning({
        let heard = Arc::clone(&heard);
        move |warning| heard.lock().unwrap().push(warning.message.clone())
    });
    let lock = lock_on(&shared, &clock, options);
    let capture = Capture::default();
    let ours = capture.run(|| {
        block_on(async {
            let held = lock.acquire().await.unwrap();
            // A peer broke it and took it.
            shared.replace(
                Holder::Record(LockRecord::for_this_process(clock.now())),
                clock.now(),
            );
            assert!(!held.refresh().await.unwrap());
            assert!(!held.refresh().await.unwrap(), "lost stays lost");
            let ours = held.owner().clone();
            drop(held);
            ours
        })
    });

    let lost = capture.with_message("lost the lock");
    assert_eq!(lost.len(), 1, "{:#?}", capture.events());
    assert_eq!(lost[0].level, Level::WARN);
    assert_eq!(lost[0].field("owner"), Some(ours.as_str()));
    assert_eq!(lost[0].field("resource"), Some("memory:events/lost.lock"));
    assert!(
        lost[0]
            .field("reason")
            .is_some_and(|reason| reason.contains("gone or replaced")),
        "{:?}",
        lost[0]
    );
    let heard = heard.lock().unwrap().clone();
    assert!(
        heard
            .iter()
            .any(|message| message.starts_with("ownership lost: ")),
        "{heard:?}"
    );
    // The loss is reported once; the release on drop that finds the lock
    // replaced is a warning of its own.
    let warnings: Vec<_> = capture
        .events()
        .into_iter()
        .filter(|event| event.level == Level::WARN)
        .map(|event| event.message)
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[1].contains("no longer ours"), "{warnings:?}");
}

#[test]
fn a_waiter_reports_whom_it_waits_for_and_how_it_got_the_lock() {
    let clock = ManualClock::new();
    let shared = MemoryBackend::new("events/wait.lock");
    let holder = lock_on(&shared, &clock, LockOptions::new(STALE));
    let contender = lock_on(&shared, &clock, LockOptions::new(STALE));
    let capture = Capture::default();
    capture.run(|| {
        block_on(async {
            let held = holder.acquire().await.unwrap();
            let releaser = async {
                support::yield_now().await;
                held.release().await.unwrap();
                clock.advance(Duration::from_millis(50));
            };
            let (taken, ()) = futures::future::join(contender.acquire(), releaser).await;
            taken.unwrap().release().await.unwrap();
        });
    });
    let waiting = capture.with_message("waiting");
    assert_eq!(waiting.len(), 1, "{:#?}", capture.events());
    assert_eq!(waiting[0].level, Level::DEBUG);
    assert!(
        waiting[0]
            .field("holder")
            .is_some_and(|holder| holder.starts_with(&format!("pid {}", std::process::id()))),
        "{:?}",
        waiting[0]
    );
    let vias: Vec<_> = capture
        .with_message("acquired")
        .iter()
        .map(|event| event.field("via").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(vias, ["free", "poll"]);
}
