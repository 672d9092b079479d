//! OpenTelemetry spans for every request: a server span with the HTTP semantic conventions and,
//! for PHP requests, a child span for the script's execution.
//!
//! Place it inside [`PropagateTraceContextLayer`]: the server span takes that request's trace id, span id
//! and parent, so exported spans, `traceparent` and log lines all agree. The PHP span is built
//! from the [`PhpTimings`] measured on the worker: it starts when the request was queued, ends
//! when the script (and, for complete responses, request shutdown) finished, and carries the
//! queue, startup, script and output times.
//!
//! [`PropagateTraceContextLayer`]: crate::layer::PropagateTraceContextLayer
//! [`PhpTimings`]: crate::http::PhpTimings

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use http::{Request, Response};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::{SdkTracer, Span};
use tower::{Layer, Service};

use crate::http::{ConnInfo, PhpTimings, TraceContext};
use crate::telemetry::trace::with_ids;

/// Records request spans with `tracer`. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct OtelLayer {
    tracer: SdkTracer,
}

impl OtelLayer {
    /// Records with `tracer` (see [`crate::telemetry::OtelExport::tracer`]).
    pub fn new(tracer: SdkTracer) -> Self {
        OtelLayer { tracer }
    }
}

impl<S> Layer<S> for OtelLayer {
    type Service = Otel<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Otel {
            inner,
            tracer: self.tracer.clone(),
        }
    }
}

/// The service produced by [`OtelLayer`].
#[derive(Debug, Clone)]
pub struct Otel<S> {
    inner: S,
    tracer: SdkTracer,
}

fn protocol_version(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

impl<S> Otel<S> {
    fn start_server_span<B>(&self, request: &Request<B>) -> Option<Span> {
        let trace = request.extensions().get::<TraceContext>()?;
        let mut attributes = vec![
            KeyValue::new("http.request.method", request.method().to_string()),
            KeyValue::new("url.path", request.uri().path().to_string()),
            KeyValue::new("network.protocol.name", "http"),
            KeyValue::new(
                "network.protocol.version",
                protocol_version(request.version()),
            ),
        ];
        if let Some(query) = request.uri().query() {
            attributes.push(KeyValue::new("url.query", query.to_string()));
        }
        if let Some(conn) = request.extensions().get::<ConnInfo>() {
            attributes.push(KeyValue::new("url.scheme", conn.scheme()));
            attributes.push(KeyValue::new(
                "client.address",
                conn.client_ip().to_string(),
            ));
            if let Some(port) = conn.client_port() {
                attributes.push(KeyValue::new("client.port", i64::from(port)));
            }
            attributes.push(KeyValue::new("server.port", i64::from(conn.server_port())));
            if conn.forwarded.is_some() {
                // The balancer the request came through.
                attributes.push(KeyValue::new(
                    "network.peer.address",
                    conn.remote_addr.ip().to_string(),
                ));
            }
        }
        if let Some(agent) = request
            .headers()
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
        {
            attributes.push(KeyValue::new("user_agent.original", agent.to_string()));
        }
        let parent = match trace.parent_span_id {
            Some(parent) => opentelemetry::Context::new().with_remote_span_context(
                opentelemetry::trace::SpanContext::new(
                    trace.trace_id,
                    parent,
                    if trace.sampled {
                        opentelemetry::trace::TraceFlags::SAMPLED
                    } else {
                        Default::default()
                    },
                    true,
                    trace.trace_state.clone(),
                ),
            ),
            None => opentelemetry::Context::new(),
        };
        let builder = self
            .tracer
            .span_builder(request.method().to_string())
            .with_kind(SpanKind::Server)
            .with_attributes(attributes);
        Some(with_ids(trace.trace_id, trace.span_id, || {
            self.tracer.build_with_context(builder, &parent)
        }))
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Otel<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let span = self.start_server_span(&request);
        ResponseFuture {
            inner: self.inner.call(request),
            span,
            started: SystemTime::now(),
            tracer: self.tracer.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Otel`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        span: Option<Span>,
        started: SystemTime,
        tracer: SdkTracer,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        if let Some(mut span) = this.span.take() {
            let status = response.status();
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status.as_u16()),
            ));
            if status.is_server_error() {
                span.set_attribute(KeyValue::new("error.type", status.as_str().to_string()));
                span.set_status(Status::error(status.to_string()));
            }
            if let Some(timings) = response.extensions().get::<PhpTimings>() {
                record_php_span(this.tracer, &span, *this.started, timings);
            }
            span.end();
        }
        Poll::Ready(Ok(response))
    }
}

/// The child span for PHP's part of the request, from the timings measured on the worker.
fn record_php_span(tracer: &SdkTracer, server: &Span, started: SystemTime, timings: &PhpTimings) {
    let queued = started + timings.parse;
    let ended = queued
        + timings.queue
        + timings.startup
        + timings.script
        + timings.shutdown.unwrap_or_default();
    let micros = |d: std::time::Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
    let mut attributes = vec![
        KeyValue::new("php.queue_us", micros(timings.queue)),
        KeyValue::new("php.startup_us", micros(timings.startup)),
        KeyValue::new("php.script_us", micros(timings.script)),
        KeyValue::new("php.output_us", micros(timings.output)),
    ];
    if let Some(shutdown) = timings.shutdown {
        attributes.push(KeyValue::new("php.shutdown_us", micros(shutdown)));
    }
    let parent =
        opentelemetry::Context::new().with_remote_span_context(server.span_context().clone());
    let mut span = tracer
        .span_builder("php")
        .with_kind(SpanKind::Internal)
        .with_start_time(queued)
        .with_attributes(attributes)
        .start_with_context(tracer, &parent);
    span.end_with_timestamp(ended);
}
