//! OpenTelemetry export: spans over OTLP/HTTP (protobuf), batched in the background.
//!
//! Enabled by the standard `OTEL_EXPORTER_OTLP_ENDPOINT` variable (or the
//! `--otel-exporter-otlp-endpoint` flag, or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); the exporter
//! reads the other standard `OTEL_EXPORTER_OTLP_*` and `OTEL_BSP_*` variables itself, except the
//! timeout (`…_TIMEOUT`, applied here to the HTTP client too) and the protocol (`http/protobuf`
//! only: any other value stops startup rather than exporting nothing). The service
//! name is `OTEL_SERVICE_NAME` (or `--otel-service-name`), `tokio_php` by default.
//!
//! Spans keep the ids [`PropagateTraceContextLayer`] chose (and sent in `traceparent`, and logged): the
//! tracer provider's id generator hands out ids preset for the span being built on this thread,
//! and random ones otherwise. Export never blocks a request: ended spans go into a bounded queue
//! (dropped when full) that a background task sends, with a timeout per export.
//!
//! [`PropagateTraceContextLayer`]: crate::layer::PropagateTraceContextLayer

use std::cell::Cell;
use std::time::Duration;

use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{
    span_processor_with_async_runtime::BatchSpanProcessor, IdGenerator, RandomIdGenerator,
    SdkTracer, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;

/// How long one export may take before it is abandoned, unless the environment says otherwise.
const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

thread_local! {
    /// Ids for the span being built on this thread (see [`with_ids`]).
    static PRESET: Cell<Option<(TraceId, SpanId)>> = const { Cell::new(None) };
}

/// Hands out the preset ids while a span is built with [`with_ids`], random ones otherwise.
#[derive(Debug, Default)]
struct PresetIds {
    random: RandomIdGenerator,
}

impl IdGenerator for PresetIds {
    fn new_trace_id(&self) -> TraceId {
        PRESET
            .with(Cell::get)
            .map_or_else(|| self.random.new_trace_id(), |(trace, _)| trace)
    }

    fn new_span_id(&self) -> SpanId {
        PRESET
            .with(Cell::get)
            .map_or_else(|| self.random.new_span_id(), |(_, span)| span)
    }
}

/// Runs `build` (which starts one span) so that span gets these ids. The trace id is only used
/// when the span has no parent (a parent's trace id always wins).
pub(crate) fn with_ids<T>(trace_id: TraceId, span_id: SpanId, build: impl FnOnce() -> T) -> T {
    PRESET.with(|preset| preset.set(Some((trace_id, span_id))));
    let built = build();
    PRESET.with(|preset| preset.set(None));
    built
}

/// The running exporter. Call [`OtelExport::shutdown`] before exit to flush the last spans.
#[derive(Debug)]
pub struct OtelExport {
    provider: SdkTracerProvider,
}

impl OtelExport {
    /// Starts exporting when an OTLP endpoint is configured: `endpoint` is the collector's base
    /// URL (`OTEL_EXPORTER_OTLP_ENDPOINT` or `--otel-exporter-otlp-endpoint`; traces go to its
    /// `/v1/traces`), unless the environment names a traces URL itself
    /// (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, which wins as the OpenTelemetry spec says). `None`
    /// when neither is set. Must run inside a tokio runtime (the batch exporter is a task on it).
    pub fn from_config(endpoint: &str, service: &str) -> Result<Option<OtelExport>, OtelError> {
        let traces_url_in_env =
            std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_ok_and(|v| !v.is_empty());
        if traces_url_in_env {
            return OtelExport::start(None, service).map(Some);
        }
        if endpoint.is_empty() {
            return Ok(None);
        }
        let traces_url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        OtelExport::start(Some(&traces_url), service).map(Some)
    }

    /// Exports to `endpoint` (the full traces URL, e.g. `http://collector:4318/v1/traces`;
    /// `None`: from the environment) as `service`.
    pub fn start(endpoint: Option<&str>, service: &str) -> Result<OtelExport, OtelError> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        check_protocol(env)?;
        let timeout = export_timeout(env)?;
        let client = opentelemetry_http::hyper::HyperClient::with_default_connector(timeout, None);
        let mut builder = SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_http_client(client)
            .with_timeout(timeout);
        if let Some(endpoint) = endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        let exporter = builder.build().map_err(|source| OtelError::Exporter {
            endpoint: endpoint.map(str::to_string),
            source,
        })?;
        let processor =
            BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_id_generator(PresetIds::default())
            .with_resource(
                Resource::builder()
                    .with_service_name(service.to_string())
                    .build(),
            )
            .build();
        tracing::info!(service, "exporting traces over OTLP/HTTP");
        Ok(OtelExport { provider })
    }

    /// The tracer the [`OtelLayer`](crate::layer::OtelLayer) records with.
    pub fn tracer(&self) -> SdkTracer {
        self.provider.tracer("tokio_php")
    }

    /// Flushes what is queued (bounded by the export timeout) and stops.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "flushing the last spans failed");
        }
    }
}

/// The export timeout the OpenTelemetry spec's variables set, in milliseconds: the traces one,
/// else the general one, else 10 s.
fn export_timeout(env: impl Fn(&str) -> Option<String>) -> Result<Duration, OtelError> {
    for variable in [
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ] {
        if let Some(value) = env(variable) {
            return value
                .trim()
                .parse()
                .map(Duration::from_millis)
                .map_err(|_| OtelError::Timeout { variable, value });
        }
    }
    Ok(DEFAULT_EXPORT_TIMEOUT)
}

/// This build exports over HTTP with protobuf only; a collector configured for another protocol
/// would never get a span, so another value stops startup.
fn check_protocol(env: impl Fn(&str) -> Option<String>) -> Result<(), OtelError> {
    for variable in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(value) = env(variable) {
            if value.trim() != "http/protobuf" {
                return Err(OtelError::Protocol { variable, value });
            }
            return Ok(());
        }
    }
    Ok(())
}

/// The OTLP exporter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    /// The exporter refused its configuration (a malformed endpoint, usually).
    #[error("OTEL_EXPORTER_OTLP_ENDPOINT{}: {source}", endpoint.as_ref().map(|e| format!("={e}")).unwrap_or_default())]
    Exporter {
        /// The traces URL given (`None`: taken from the environment).
        endpoint: Option<String>,
        /// What the exporter said.
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// A timeout that is not a number of milliseconds.
    #[error("{variable}={value:?}: expected milliseconds, e.g. 10000")]
    Timeout {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
    },
    /// A protocol other than `http/protobuf`.
    #[error("{variable}={value:?}: this build exports over http/protobuf only")]
    Protocol {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_export_timeout_follows_the_spec_variables() {
        assert_eq!(export_timeout(env(&[])).unwrap(), DEFAULT_EXPORT_TIMEOUT);
        assert_eq!(
            export_timeout(env(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "2500")])).unwrap(),
            Duration::from_millis(2500)
        );
        const BOTH: &[(&str, &str)] = &[
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "700"),
        ];
        assert_eq!(
            export_timeout(env(BOTH)).unwrap(),
            Duration::from_millis(700)
        );
        let error = export_timeout(env(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")])).unwrap_err();
        assert_eq!(
            error.to_string(),
            "OTEL_EXPORTER_OTLP_TIMEOUT=\"10s\": expected milliseconds, e.g. 10000"
        );
    }

    #[test]
    fn only_http_protobuf_is_accepted_as_the_protocol() {
        assert!(check_protocol(env(&[])).is_ok());
        assert!(check_protocol(env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")])).is_ok());
        let error = check_protocol(env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])).unwrap_err();
        assert!(
            matches!(
                error,
                OtelError::Protocol {
                    variable: "OTEL_EXPORTER_OTLP_PROTOCOL",
                    ..
                }
            ),
            "{error:?}"
        );
    }
}
