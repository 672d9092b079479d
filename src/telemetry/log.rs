//! JSON logs: one object per line, `{"ts","level","type","msg","ctx","data"}`.
//!
//! - `ts`: ISO 8601 UTC with milliseconds.
//! - `type`: `app`, `access` or `error` (events set it with a `log_type` field; PHP's own errors
//!   are `error`).
//! - `ctx`: `service` plus the `request_id`, `trace_id` and `span_id` recorded on any enclosing
//!   span, so every line logged while serving a request carries its ids — also lines logged on
//!   the PHP worker thread, which runs inside the request's span.
//! - `data`: every other field of the event.

use std::fmt;
use std::io::Write;
use std::time::SystemTime;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The span fields that make up a line's `ctx`.
const CONTEXT_FIELDS: [&str; 3] = ["request_id", "trace_id", "span_id"];

/// Installs the JSON logger for the whole process, filtered by `filter` (EnvFilter syntax).
pub fn init(filter: &str, service: &str) -> Result<(), LogError> {
    use tracing_subscriber::prelude::*;
    let env_filter =
        tracing_subscriber::EnvFilter::try_new(filter).map_err(|source| LogError::Filter {
            filter: filter.to_string(),
            source,
        })?;
    tracing_subscriber::registry()
        .with(env_filter)
        .with(JsonLayer::new(service, std::io::stdout))
        .try_init()
        .map_err(LogError::Install)
}

/// The logger could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// `RUST_LOG` is not EnvFilter syntax.
    #[error("RUST_LOG={filter:?} is not a valid log filter: {source}")]
    Filter {
        /// The filter as given.
        filter: String,
        /// What the parser said.
        source: tracing_subscriber::filter::ParseError,
    },
    /// Another logger is already installed in this process.
    #[error("installing the logger: {0}")]
    Install(tracing_subscriber::util::TryInitError),
}

/// A `tracing` layer writing one JSON object per event to `make_writer()`.
pub struct JsonLayer<W> {
    service: String,
    make_writer: W,
}

impl<W> JsonLayer<W> {
    /// Logs as `service`, writing each line to a writer from `make_writer`.
    pub fn new(service: &str, make_writer: W) -> Self {
        JsonLayer {
            service: service.to_string(),
            make_writer,
        }
    }
}

impl<W> fmt::Debug for JsonLayer<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonLayer")
            .field("service", &self.service)
            .finish()
    }
}

/// The context fields recorded on one span. Spans are made for every request and most are
/// never logged in, so this stays a short list of owned values until a line needs them.
#[derive(Default)]
struct SpanContext(Vec<(&'static str, String)>);

impl SpanContext {
    fn set(&mut self, name: &'static str, value: String) {
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some((_, old)) => *old = value,
            None => self.0.push((name, value)),
        }
    }
}

impl Visit for SpanContext {
    fn record_str(&mut self, field: &Field, value: &str) {
        if CONTEXT_FIELDS.contains(&field.name()) {
            self.set(field.name(), value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if CONTEXT_FIELDS.contains(&field.name()) {
            self.set(field.name(), format!("{value:?}"));
        }
    }
}

/// An event's message, type and data.
#[derive(Default)]
struct EventFields {
    message: String,
    log_type: Option<String>,
    data: Map<String, Value>,
}

impl EventFields {
    fn put(&mut self, field: &Field, value: Value) {
        match field.name() {
            "message" => {
                self.message = match value {
                    Value::String(s) => s,
                    other => other.to_string(),
                }
            }
            "log_type" => self.log_type = value.as_str().map(str::to_string),
            name => {
                self.data.insert(name.to_string(), value);
            }
        }
    }
}

impl Visit for EventFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::from(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::from(format!("{value:?}")));
    }
}

impl<S, W> Layer<S> for JsonLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = SpanContext::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut extensions = span.extensions_mut();
            if let Some(fields) = extensions.get_mut::<SpanContext>() {
                values.record(fields);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = EventFields::default();
        event.record(&mut fields);

        let mut context = Map::new();
        context.insert("service".into(), Value::from(self.service.as_str()));
        if let Some(scope) = ctx.event_scope(event) {
            // Outermost first, so inner spans win.
            for span in scope.from_root() {
                if let Some(span_fields) = span.extensions().get::<SpanContext>() {
                    for (k, v) in &span_fields.0 {
                        context.insert((*k).to_string(), Value::from(v.as_str()));
                    }
                }
            }
        }

        let level = event.metadata().level();
        let log_type = fields.log_type.unwrap_or_else(|| "app".to_string());
        if fields.data.is_empty() {
            fields
                .data
                .insert("target".into(), Value::from(event.metadata().target()));
        }
        let line = serde_json::json!({
            "ts": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            "level": level.as_str().to_ascii_lowercase(),
            "type": log_type,
            "msg": fields.message,
            "ctx": context,
            "data": fields.data,
        });
        let mut writer = self.make_writer.make_writer();
        let mut bytes = line.to_string().into_bytes();
        bytes.push(b'\n');
        let _ = writer.write_all(&bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::prelude::*;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(capture: &Capture) -> Vec<Value> {
        String::from_utf8(capture.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn events_become_json_lines_with_the_request_context() {
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::registry()
            .with(JsonLayer::new("tokio_php", move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("outside");
            let trace = tracing::info_span!(
                "trace",
                trace_id = "0af7651916cd43dd8448eb211c80319c",
                span_id = "b7ad6b7169203331"
            );
            let _t = trace.enter();
            let request = tracing::info_span!("request", request_id = "abc-123");
            let _r = request.enter();
            tracing::warn!(log_type = "access", status = 200u64, path = "/x", "GET /x");
        });
        let lines = lines(&capture);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["type"], "app");
        assert_eq!(lines[0]["msg"], "outside");
        assert_eq!(lines[0]["ctx"], serde_json::json!({"service": "tokio_php"}));
        let access = &lines[1];
        assert_eq!(access["level"], "warn");
        assert_eq!(access["type"], "access");
        assert_eq!(access["msg"], "GET /x");
        assert_eq!(access["ctx"]["request_id"], "abc-123");
        assert_eq!(
            access["ctx"]["trace_id"],
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(access["ctx"]["span_id"], "b7ad6b7169203331");
        assert_eq!(
            access["data"],
            serde_json::json!({"status": 200, "path": "/x"})
        );
        let ts = access["ts"].as_str().unwrap();
        assert!(
            ts.ends_with('Z') && ts.len() == "2026-01-01T00:00:00.000Z".len(),
            "{ts}"
        );
    }
}
