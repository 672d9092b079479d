//! The tower layers that make up tokio_php's server, each usable on its own with
//! `tower::ServiceBuilder` around any `Service<http::Request<B>>`.
//!
//! [`crate::stack`] orders them from [`crate::Config`]. To build the default stack by hand,
//! outermost first:
//!
//! ```no_run
//! use std::time::Duration;
//! use tokio_php::layer::*;
//! use tokio_php::http::DocumentRoot;
//! use tokio_php::php::{PhpPool, PhpRuntime, PhpRuntimeConfig, PhpService, PhpServiceConfig, PoolConfig};
//! use tower::ServiceBuilder;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let _php = PhpRuntime::start(PhpRuntimeConfig::default())?; // before any other thread
//! let pool = PhpPool::start(PoolConfig::default())?;
//! let root = DocumentRoot::new("www")?;
//! let service = ServiceBuilder::new()
//!     .layer(TrustForwardedLayer::new("10.0.0.0/8".parse()?))   // TRUSTED_PROXIES
//!     .layer(PropagateTraceContextLayer::new())                        // traceparent in and out
//!     .layer(SetRequestIdLayer::new())                           // X-Request-ID
//!     .layer(AccessLogLayer::new())                           // ACCESS_LOG=1
//!     .layer(ProfileLayer::new())                             // PROFILE=1
//!     .layer(RateLimitLayer::new(100, Duration::from_secs(60))) // RATE_LIMIT / RATE_WINDOW
//!     .layer(ErrorPagesLayer::from_dir("www/errors")?)        // ERROR_PAGES_DIR
//!     .layer(ValidateRequestLayer::new())                     // Host, Transfer-Encoding, OPTIONS *
//!     .layer(CompressionLayer::new())                         // zstd / br / gzip
//!     .layer(TryFilesLayer::new(root.clone()).with_cache_ttl(Some(Duration::from_secs(86400)))) // STATIC_CACHE_TTL, INDEX_FILE
//!     .layer(TimeoutLayer::new(Duration::from_secs(120)))     // REQUEST_TIMEOUT
//!     .service(PhpService::new(&pool, PhpServiceConfig::new(root)));
//! // serve it: tokio_php::server::serve(listener, service, ServeConfig::default(), shutdown)
//! # drop(service); Ok(()) }
//! ```
//!
//! | layer | what it does |
//! |---|---|
//! | [`TrustForwardedLayer`] | `TRUSTED_PROXIES`: the client's address, scheme and port from a trusted balancer's `Forwarded` / `X-Forwarded-*` |
//! | [`PropagateTraceContextLayer`] | W3C `traceparent` in and out, a random span id per request, `TRACE_ID`/`SPAN_ID`/`PARENT_SPAN_ID` for PHP |
//! | [`SetRequestIdLayer`] | `X-Request-ID` kept (if sane) or derived from the trace; in every log line |
//! | [`OtelLayer`] | OpenTelemetry server span (+ a PHP child span), exported over OTLP |
//! | [`RecordMetricsLayer`] | Prometheus counters and latency histogram per request |
//! | [`AccessLogLayer`] | one JSON `access` line per request once its body is sent |
//! | [`ProfileLayer`] | `X-Profile: 1` → `X-Profile-*` timing headers |
//! | [`RateLimitLayer`] | per-client-IP limit (governor) → `429`, `X-RateLimit-*` |
//! | [`ErrorPagesLayer`] | HTML pages for browsers on empty or server-generated errors |
//! | [`ValidateRequestLayer`] | `400` for a missing, repeated or invalid `Host`, `501`/`400` for bad `Transfer-Encoding`; `OPTIONS *` |
//! | [`CompressionLayer`] | zstd, brotli or gzip for text-like bodies, level by size |
//! | [`TryFilesLayer`] | static files, PHP, or a front controller |
//! | [`TimeoutLayer`] | `504` at the deadline and the script stopped; `tokio_request_heartbeat()` extends it |
//!
//! Layers share what they learn through typed request extensions, all defined in
//! [`crate::http`]: [`TraceContext`](crate::http::TraceContext),
//! [`RequestId`](crate::http::RequestId), [`Deadline`](crate::http::Deadline),
//! [`ConnInfo`](crate::http::ConnInfo), [`Script`](crate::http::Script) and
//! [`ServerVars`](crate::http::ServerVars) (values PHP sees in `$_SERVER`); responses carry
//! [`PhpTimings`](crate::http::PhpTimings), [`FlushedEarly`](crate::http::FlushedEarly) and
//! [`ServerGenerated`](crate::http::ServerGenerated). A layer never reaches into
//! [`crate::php`]: it works around any service.

pub mod access_log;
pub mod compression;
pub mod error_pages;
pub mod forwarded;
pub mod metrics;
pub mod otel;
pub mod profile;
pub mod rate_limit;
pub mod request_id;
mod span_header;
pub mod timeout;
pub mod trace_context;
pub mod try_files;
pub mod validate_request;

pub use access_log::{AccessLog, AccessLogBody, AccessLogLayer};
pub use compression::{Compression, CompressionBody, CompressionLayer};
pub use error_pages::{ErrorPages, ErrorPagesLayer};
pub use forwarded::{TrustForwarded, TrustForwardedLayer};
pub use metrics::{RecordMetrics, RecordMetricsLayer};
pub use otel::{Otel, OtelLayer};
pub use profile::{Profile, ProfileLayer};
pub use rate_limit::{RateLimit, RateLimitLayer};
pub use request_id::{SetRequestId, SetRequestIdLayer};
pub use span_header::SpanHeaderFuture;
pub use timeout::{Timeout, TimeoutLayer};
pub use trace_context::{PropagateTraceContext, PropagateTraceContextLayer};
pub use try_files::{TryFiles, TryFilesBody, TryFilesLayer};
pub use validate_request::{ValidateRequest, ValidateRequestLayer};
