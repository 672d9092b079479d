//! Request metrics: method, status and time to the response head, recorded into a
//! [`Metrics`] registry (served on the internal server's `/metrics`).
//!
//! ```
//! use tokio_php::layer::RecordMetricsLayer;
//! use tokio_php::telemetry::Metrics;
//! use tower::ServiceBuilder;
//!
//! let metrics = Metrics::new();
//! let service = ServiceBuilder::new()
//!     .layer(RecordMetricsLayer::new(metrics.clone()))
//!     .service_fn(|_: http::Request<()>| async { Ok::<_, std::convert::Infallible>(http::Response::new(())) });
//! # drop(service);
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Method, Request, Response};
use tower::{Layer, Service};

use crate::http::ServerGenerated;
use crate::telemetry::Metrics;

/// Records request metrics. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct RecordMetricsLayer {
    metrics: Metrics,
}

impl RecordMetricsLayer {
    /// Records into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        RecordMetricsLayer { metrics }
    }
}

impl<S> Layer<S> for RecordMetricsLayer {
    type Service = RecordMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RecordMetrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service produced by [`RecordMetricsLayer`].
#[derive(Debug, Clone)]
pub struct RecordMetrics<S> {
    inner: S,
    metrics: Metrics,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RecordMetrics<S>
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
        let method = request.method().clone();
        ResponseFuture {
            inner: self.inner.call(request),
            metrics: self.metrics.clone(),
            method,
            started: Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`RecordMetrics`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        metrics: Metrics,
        method: Method,
        started: Instant,
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
        let generated = response.extensions().get::<ServerGenerated>().is_some();
        this.metrics.record(
            this.method,
            response.status(),
            this.started.elapsed(),
            generated,
        );
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{service_fn, ServiceExt};

    #[tokio::test]
    async fn every_response_is_counted() {
        let metrics = Metrics::new();
        let service = RecordMetricsLayer::new(metrics.clone()).layer(service_fn(
            |request: Request<()>| async move {
                let mut response = Response::new(());
                if request.uri().path() == "/busy" {
                    *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                    response.extensions_mut().insert(ServerGenerated);
                }
                Ok::<_, Infallible>(response)
            },
        ));
        for path in ["/", "/", "/busy"] {
            service
                .clone()
                .oneshot(Request::get(path).body(()).unwrap())
                .await
                .unwrap();
        }
        let text = metrics.render(0, None, None);
        assert!(
            text.contains("tokio_php_responses_total{status=\"200\"} 2"),
            "{text}"
        );
        assert!(text.contains("tokio_php_dropped_requests 1"));
        assert_eq!(metrics.total_requests(), 3);
    }
}
