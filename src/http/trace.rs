//! Who a request is: its W3C trace context and its request id, shared through request
//! extensions by [`PropagateTraceContextLayer`](crate::layer::PropagateTraceContextLayer),
//! [`SetRequestIdLayer`](crate::layer::SetRequestIdLayer), the OpenTelemetry layer, the access
//! log and PHP's `$_SERVER`.

use std::fmt;
use std::sync::Arc;

use http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};

pub(crate) const TRACEPARENT: &str = "traceparent";
pub(crate) const TRACESTATE: &str = "tracestate";

/// The trace this request belongs to and its own span.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceContext {
    /// The trace, continued from the caller or new.
    pub trace_id: TraceId,
    /// This request's span, always new.
    pub span_id: SpanId,
    /// The caller's span, when the trace was propagated.
    pub parent_span_id: Option<SpanId>,
    /// The caller's sampling decision (new traces are sampled).
    pub sampled: bool,
    /// The caller's `tracestate`, passed on unchanged.
    pub trace_state: TraceState,
}

impl TraceContext {
    /// Continues the trace in `headers` (W3C `traceparent`/`tracestate`), or starts a new one when
    /// there is none or it is malformed.
    pub fn from_headers(headers: &HeaderMap) -> TraceContext {
        let ids = RandomIdGenerator::default();
        let parent = if headers
            .get(TRACEPARENT)
            .is_some_and(|v| is_version_00(v.as_bytes()))
        {
            let context = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
            context.span().span_context().clone()
        } else {
            SpanContext::empty_context()
        };
        if parent.is_valid() {
            TraceContext {
                trace_id: parent.trace_id(),
                span_id: ids.new_span_id(),
                parent_span_id: Some(parent.span_id()),
                sampled: parent.is_sampled(),
                trace_state: parent.trace_state().clone(),
            }
        } else {
            TraceContext {
                trace_id: ids.new_trace_id(),
                span_id: ids.new_span_id(),
                parent_span_id: None,
                sampled: true,
                trace_state: TraceState::default(),
            }
        }
    }

    /// This request's span as a `traceparent` value.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id,
            self.span_id,
            self.flags().to_u8()
        )
    }

    /// This request's span as an OpenTelemetry span context.
    pub fn span_context(&self) -> SpanContext {
        SpanContext::new(
            self.trace_id,
            self.span_id,
            self.flags(),
            false,
            self.trace_state.clone(),
        )
    }

    pub(crate) fn flags(&self) -> TraceFlags {
        if self.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        }
    }
}

/// The exact version-00 shape, `00-<32 hex>-<16 hex>-<2 hex>` in lowercase. The propagator alone
/// also accepts short ids and later versions; the rest (all-zero ids) it checks itself.
fn is_version_00(value: &[u8]) -> bool {
    let lower_hex = |part: &[u8], len: usize| {
        part.len() == len && part.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let parts: Vec<&[u8]> = value.split(|&b| b == b'-').collect();
    matches!(parts.as_slice(), [version, trace, span, flags]
        if *version == b"00" && lower_hex(trace, 32) && lower_hex(span, 16) && lower_hex(flags, 2))
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

const MAX_LEN: usize = 128;

/// The request's id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(Arc<str>);

impl RequestId {
    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `value` if it is an acceptable client-supplied id.
    pub fn parse(value: &str) -> Option<RequestId> {
        let acceptable = (1..=MAX_LEN).contains(&value.len())
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(&b));
        acceptable.then(|| RequestId(value.into()))
    }

    /// `{trace_id[0..12]}-{span_id[0..4]}`, or random hex in the same shape without a trace.
    pub fn derive(trace: Option<&TraceContext>) -> RequestId {
        let (trace_id, span_id) = match trace {
            Some(trace) => (trace.trace_id.to_string(), trace.span_id.to_string()),
            None => {
                let ids = RandomIdGenerator::default();
                (
                    ids.new_trace_id().to_string(),
                    ids.new_span_id().to_string(),
                )
            }
        };
        RequestId(format!("{}-{}", &trace_id[..12], &span_id[..4]).into())
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
