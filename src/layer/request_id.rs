//! `X-Request-ID`: keep the caller's (when it is sane) or derive one from the trace.
//!
//! A valid incoming id (1–128 characters of `A-Z a-z 0-9 - _ . : / + = @`) is used as-is; junk is
//! replaced. A new id is `{trace_id[0..12]}-{span_id[0..4]}` from the request's
//! [`TraceContext`] (random when there is none), so an id found in a log leads to the trace.
//! The id goes into the request extensions ([`RequestId`]), the request's own `x-request-id`
//! header (PHP's `$_SERVER['HTTP_X_REQUEST_ID']`), every response, and a `request` tracing span
//! with a `request_id` field around the rest of the request — so every log line carries it.
//!
//! ```
//! use tokio_php::{http::RequestId, layer::SetRequestIdLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let service = ServiceBuilder::new()
//!     .layer(SetRequestIdLayer::new())
//!     .service_fn(|request: http::Request<()>| async move {
//!         let id = request.extensions().get::<RequestId>().unwrap().clone();
//!         Ok::<_, std::convert::Infallible>(http::Response::new(id.as_str().to_string()))
//!     });
//! let request = http::Request::builder().header("x-request-id", "abc-123").body(()).unwrap();
//! let response = service.oneshot(request).await.unwrap();
//! assert_eq!(response.headers()["x-request-id"], "abc-123");
//! assert_eq!(response.body(), "abc-123");
//! # }
//! ```

use std::task::{Context, Poll};

use http::{HeaderName, HeaderValue, Request, Response};
use tower::{Layer, Service};

use super::SpanHeaderFuture;
use crate::http::{RequestId, TraceContext};

const X_REQUEST_ID: &str = "x-request-id";

/// Applies [`RequestId`] handling to a service. See the [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct SetRequestIdLayer {
    _private: (),
}

impl SetRequestIdLayer {
    /// A new layer.
    pub fn new() -> Self {
        SetRequestIdLayer { _private: () }
    }
}

impl<S> Layer<S> for SetRequestIdLayer {
    type Service = SetRequestId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SetRequestId { inner }
    }
}

/// The service produced by [`SetRequestIdLayer`].
#[derive(Debug, Clone)]
pub struct SetRequestId<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SetRequestId<S>
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
        let id = request
            .headers()
            .get(X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .and_then(RequestId::parse)
            .unwrap_or_else(|| RequestId::derive(request.extensions().get::<TraceContext>()));
        // Every id that gets here is a valid header value (ASCII, no control characters).
        let header = HeaderValue::from_str(id.as_str()).ok();
        if let Some(value) = &header {
            request.headers_mut().insert(X_REQUEST_ID, value.clone());
        }
        let span = tracing::info_span!("request", request_id = %id);
        request.extensions_mut().insert(id);
        // Inside the span for the call too, so layers below see it as the current span.
        let inner = span.in_scope(|| self.inner.call(request));
        SpanHeaderFuture::new(inner, span, HeaderName::from_static(X_REQUEST_ID), header)
    }
}

/// The response future of [`SetRequestId`].
pub type ResponseFuture<F> = SpanHeaderFuture<F>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::PropagateTraceContextLayer;
    use std::convert::Infallible;
    use tower::{service_fn, ServiceBuilder, ServiceExt};

    async fn id_for(request: Request<()>) -> (String, String, String) {
        let service = ServiceBuilder::new()
            .layer(PropagateTraceContextLayer::new())
            .layer(SetRequestIdLayer::new())
            .service_fn(|request: Request<()>| async move {
                let id = request.extensions().get::<RequestId>().unwrap().to_string();
                let header = request.headers()[X_REQUEST_ID]
                    .to_str()
                    .unwrap()
                    .to_string();
                assert_eq!(id, header, "PHP sees the same id");
                Ok::<_, Infallible>(Response::new(id))
            });
        let response = service.oneshot(request).await.unwrap();
        let traceparent = response.headers()["traceparent"]
            .to_str()
            .unwrap()
            .to_string();
        let header = response.headers()[X_REQUEST_ID]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(&header, response.body());
        (header, traceparent, response.into_body())
    }

    #[tokio::test]
    async fn sane_incoming_ids_are_kept() {
        for id in [
            "abc-123",
            "550e8400-e29b-41d4-a716-446655440000",
            "a",
            &"x".repeat(128),
        ] {
            let request = Request::builder()
                .header(X_REQUEST_ID, id)
                .body(())
                .unwrap();
            assert_eq!(id_for(request).await.0, id);
        }
    }

    #[tokio::test]
    async fn junk_is_replaced_by_an_id_derived_from_the_trace() {
        for junk in [
            "",
            "has space",
            "semi;colon",
            "quote\"",
            &"x".repeat(129),
            "ünïcode",
        ] {
            let request = Request::builder()
                .header(
                    X_REQUEST_ID,
                    HeaderValue::from_bytes(junk.as_bytes()).unwrap(),
                )
                .body(())
                .unwrap();
            let (id, traceparent, _) = id_for(request).await;
            let trace_id = &traceparent[3..35];
            let span_id = &traceparent[36..52];
            assert_eq!(
                id,
                format!("{}-{}", &trace_id[..12], &span_id[..4]),
                "{junk:?}"
            );
        }
    }

    #[tokio::test]
    async fn without_a_trace_the_id_is_random() {
        let service = SetRequestIdLayer::new().layer(service_fn(|_: Request<()>| async {
            Ok::<_, Infallible>(Response::new(()))
        }));
        let a = service.clone().oneshot(Request::new(())).await.unwrap();
        let b = service.oneshot(Request::new(())).await.unwrap();
        assert_ne!(a.headers()[X_REQUEST_ID], b.headers()[X_REQUEST_ID]);
        assert_eq!(a.headers()[X_REQUEST_ID].len(), 17);
    }
}
