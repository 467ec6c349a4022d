//! The runtime's `tracing` events as Python `logging` records (logger `threeport.runtime`), so
//! a Python program sees what the Rust side reports (a reconcile that timed out, a controller
//! that could not subscribe) where it sees its own logs. `THREEPORT_LOG` (a `tracing` filter
//! such as `info` or `threeport_core=debug`) chooses what is forwarded; `warn` by default.
//!
//! Events are handed to a thread of their own that takes the interpreter to log them: the
//! thread emitting an event may hold a lock that a Python thread is waiting for, and must
//! never wait for the interpreter itself.

use std::fmt::Write as _;

use pyo3::prelude::*;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the forwarding as the process's `tracing` subscriber, unless the host program
/// installed one already.
pub(crate) fn forward_to_python_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("THREEPORT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let (records, received) = std::sync::mpsc::channel::<(u8, String)>();
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(PythonLogging { records })
        .try_init();
    if installed.is_ok() {
        let spawned = std::thread::Builder::new()
            .name("threeport-logs".into())
            .spawn(move || {
                for (level, text) in received {
                    // Not while the interpreter shuts down: the record is dropped then.
                    let _ = Python::try_attach(|py| {
                        let logger = py
                            .import("logging")?
                            .call_method1("getLogger", ("threeport.runtime",))?;
                        logger.call_method1("log", (level, text))?;
                        Ok::<_, PyErr>(())
                    });
                }
            });
        if let Err(err) = spawned {
            eprintln!("threeport: cannot forward runtime logs to Python logging: {err}");
        }
    }
}

struct PythonLogging {
    records: std::sync::mpsc::Sender<(u8, String)>,
}

/// `message key=value …`, as the text log format writes it.
#[derive(Default)]
struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

/// A span's fields, recorded when it opens.
struct SpanFields(String);

impl<S> Layer<S> for PythonLogging
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Line::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields.0));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut line = Line::default();
        event.record(&mut line);
        // The spans around the event say which object it is about (`reconcile{kind id}`).
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    let _ = write!(line.0, " [{}{{{}}}]", span.name(), fields.0.trim());
                }
            }
        }
        let level = match *event.metadata().level() {
            Level::ERROR => 40,
            Level::WARN => 30,
            Level::INFO => 20,
            Level::DEBUG => 10,
            Level::TRACE => 5,
        };
        let _ = self.records.send((level, line.0));
    }
}
