//! The internal (operator) server on `INTERNAL_ADDR`: `/health`, `/metrics`, `/config`.
//!
//! Keep it off the public network: it tells how the server is configured and loaded.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tower::service_fn;

use crate::http::{plain_response, plain_response_with};
use crate::php::PoolMonitor;
use crate::server::{serve, ConnectionStats, ServeConfig};
use crate::telemetry::Metrics;

/// What the internal server reports on.
#[derive(Debug, Clone)]
pub struct InternalState {
    /// The public server's metrics.
    pub metrics: Metrics,
    /// The public server's connections (share [`ServeConfig::stats`]).
    pub connections: Arc<ConnectionStats>,
    /// The PHP pool, if PHP runs (not with the stub).
    pub pool: Option<PoolMonitor>,
    /// The effective configuration, as `/config` shows it (no secrets: file paths only).
    pub config: serde_json::Value,
}

impl InternalState {
    fn health(&self) -> (StatusCode, serde_json::Value) {
        let workers_alive = self.pool.as_ref().map(|p| p.stats().live_workers);
        let status = if self.connections.is_draining() {
            "draining"
        } else if workers_alive == Some(0) {
            "no_php_workers"
        } else {
            "ok"
        };
        let code = if status == "ok" {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let body = serde_json::json!({
            "status": status,
            "timestamp": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            "active_connections": self.connections.active(),
            "total_requests": self.metrics.total_requests(),
            "php_workers_alive": workers_alive,
        });
        (code, body)
    }

    fn respond(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return plain_response(StatusCode::METHOD_NOT_ALLOWED).map(Full::new);
        }
        match request.uri().path() {
            "/health" => {
                let (status, body) = self.health();
                json(status, &body)
            }
            "/metrics" => {
                let pool = self.pool.as_ref().map(PoolMonitor::stats);
                let workers = self.pool.as_ref().and_then(PoolMonitor::worker_stats);
                let metrics =
                    self.metrics
                        .render(self.connections.active(), pool, workers.as_ref());
                let mut response = plain_response_with(StatusCode::OK, metrics).map(Full::new);
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
            "/config" => json(StatusCode::OK, &self.config),
            _ => plain_response(StatusCode::NOT_FOUND).map(Full::new),
        }
    }
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Serves the internal endpoints on `listener` until `shutdown` completes.
pub async fn serve_internal(
    listener: TcpListener,
    state: InternalState,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let state = Arc::new(state);
    let service = service_fn(move |request: Request<Incoming>| {
        let response = state.respond(&request);
        async move { Ok::<_, Infallible>(response) }
    });
    let config = ServeConfig {
        name: "internal",
        ..ServeConfig::default()
    };
    serve(listener, service, config, shutdown).await
}
