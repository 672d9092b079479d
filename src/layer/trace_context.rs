//! W3C Trace Context: continue the caller's trace (or start one) and give every request its own
//! span id.
//!
//! The incoming `traceparent` is parsed with OpenTelemetry's [`TraceContextPropagator`]; a missing
//! or malformed one starts a new trace. Each request gets a fresh random span id whose parent is
//! the caller's span. The result is a [`TraceContext`] in the request extensions, the request's
//! `traceparent` header rewritten to this server's span (so PHP's `$_SERVER['HTTP_TRACEPARENT']`
//! is what it should propagate downstream), `TRACE_ID`, `SPAN_ID` and `PARENT_SPAN_ID` in
//! `$_SERVER`, `traceparent` on the response, and a `trace` tracing span carrying `trace_id` and
//! `span_id` around the rest of the request (so every log line has them).
//!
//! ```
//! use tokio_php::{http::TraceContext, layer::PropagateTraceContextLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let service = ServiceBuilder::new()
//!     .layer(PropagateTraceContextLayer::new())
//!     .service_fn(|request: http::Request<()>| async move {
//!         let trace = request.extensions().get::<TraceContext>().unwrap();
//!         Ok::<_, std::convert::Infallible>(http::Response::new(trace.trace_id.to_string()))
//!     });
//! let request = http::Request::builder()
//!     .header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
//!     .body(())
//!     .unwrap();
//! let response = service.oneshot(request).await.unwrap();
//! assert_eq!(response.body(), "0af7651916cd43dd8448eb211c80319c");
//! assert!(response.headers()["traceparent"].to_str().unwrap().starts_with("00-0af7651916cd43dd8448eb211c80319c-"));
//! # }
//! ```

use std::task::{Context, Poll};

use http::{HeaderName, HeaderValue, Request, Response};
use opentelemetry::trace::TraceState;
use tower::{Layer, Service};

use super::SpanHeaderFuture;
use crate::http::{ServerVars, TraceContext, TRACEPARENT, TRACESTATE};

/// Applies [`TraceContext`] handling to a service. See the [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct PropagateTraceContextLayer {
    _private: (),
}

impl PropagateTraceContextLayer {
    /// A new layer.
    pub fn new() -> Self {
        PropagateTraceContextLayer { _private: () }
    }
}

impl<S> Layer<S> for PropagateTraceContextLayer {
    type Service = PropagateTraceContext<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PropagateTraceContext { inner }
    }
}

/// The service produced by [`PropagateTraceContextLayer`].
#[derive(Debug, Clone)]
pub struct PropagateTraceContext<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for PropagateTraceContext<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let trace = TraceContext::from_headers(request.headers());
        // Each id is formatted once: for the header and for PHP.
        let trace_id = trace.trace_id.to_string();
        let span_id = trace.span_id.to_string();
        let flags = trace.flags().to_u8();
        let traceparent =
            HeaderValue::try_from(format!("00-{trace_id}-{span_id}-{flags:02x}")).ok();
        let span = tracing::info_span!(
            "trace",
            trace_id = %trace.trace_id,
            span_id = %trace.span_id,
        );

        let headers = request.headers_mut();
        if let Some(value) = &traceparent {
            headers.insert(TRACEPARENT, value.clone());
        }
        if trace.trace_state == TraceState::default() {
            headers.remove(TRACESTATE);
        }
        let vars = request
            .extensions_mut()
            .get_or_insert_default::<ServerVars>();
        vars.insert("TRACE_ID", trace_id);
        vars.insert("SPAN_ID", span_id);
        if let Some(parent) = trace.parent_span_id {
            vars.insert("PARENT_SPAN_ID", parent.to_string());
        }
        request.extensions_mut().insert(trace);

        // Inside the span for the call too, so layers below see it as the current span.
        let inner = span.in_scope(|| self.inner.call(request));
        SpanHeaderFuture::new(
            inner,
            span,
            HeaderName::from_static(TRACEPARENT),
            traceparent,
        )
    }
}

/// The response future of [`PropagateTraceContext`].
pub type ResponseFuture<F> = SpanHeaderFuture<F>;

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, TraceId};
    use std::convert::Infallible;
    use tower::{service_fn, ServiceExt};

    async fn run(request: Request<()>) -> (TraceContext, Option<String>, ServerVars, Response<()>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let service =
            PropagateTraceContextLayer::new().layer(service_fn(move |request: Request<()>| {
                let trace = request.extensions().get::<TraceContext>().cloned().unwrap();
                let header = request
                    .headers()
                    .get(TRACEPARENT)
                    .map(|v| v.to_str().unwrap().to_string());
                let vars = request.extensions().get::<ServerVars>().cloned().unwrap();
                tx.send((trace, header, vars)).unwrap();
                async { Ok::<_, Infallible>(Response::new(())) }
            }));
        let response = service.oneshot(request).await.unwrap();
        let (trace, header, vars) = rx.recv().unwrap();
        (trace, header, vars, response)
    }

    fn var<'a>(vars: &'a ServerVars, name: &str) -> Option<&'a str> {
        vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    #[tokio::test]
    async fn a_valid_traceparent_is_continued_with_a_new_span() {
        let request = Request::builder()
            .header(
                TRACEPARENT,
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )
            .header(TRACESTATE, "vendor=value")
            .body(())
            .unwrap();
        let (trace, header, vars, response) = run(request).await;
        assert_eq!(
            trace.trace_id.to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(
            trace.parent_span_id.unwrap().to_string(),
            "b7ad6b7169203331"
        );
        assert_ne!(trace.span_id.to_string(), "b7ad6b7169203331");
        assert_eq!(trace.trace_state.header(), "vendor=value");
        let ours = format!("00-0af7651916cd43dd8448eb211c80319c-{}-01", trace.span_id);
        assert_eq!(
            header.as_deref(),
            Some(ours.as_str()),
            "PHP sees this server's span"
        );
        assert_eq!(response.headers()[TRACEPARENT], ours.as_str());
        assert_eq!(
            var(&vars, "TRACE_ID"),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        assert_eq!(
            var(&vars, "SPAN_ID"),
            Some(trace.span_id.to_string().as_str())
        );
        assert_eq!(var(&vars, "PARENT_SPAN_ID"), Some("b7ad6b7169203331"));
    }

    #[tokio::test]
    async fn malformed_traceparents_start_a_new_trace() {
        for bad in [
            "garbage",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        ] {
            let request = Request::builder()
                .header(TRACEPARENT, bad)
                .body(())
                .unwrap();
            let (trace, _, vars, response) = run(request).await;
            assert_eq!(trace.parent_span_id, None, "{bad}");
            assert_ne!(
                trace.trace_id.to_string(),
                "0af7651916cd43dd8448eb211c80319c",
                "{bad}"
            );
            assert!(trace.trace_id != TraceId::INVALID && trace.span_id != SpanId::INVALID);
            assert_eq!(var(&vars, "PARENT_SPAN_ID"), None);
            assert_eq!(
                response.headers()[TRACEPARENT],
                trace.traceparent().as_str()
            );
        }
    }

    #[tokio::test]
    async fn span_ids_are_random_per_request() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100 {
            let (trace, ..) = run(Request::new(())).await;
            assert!(seen.insert(trace.span_id), "span ids never repeat");
            assert_eq!(trace.traceparent().len(), 55);
        }
    }
}
