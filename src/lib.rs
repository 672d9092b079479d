//! tokio_php: an async HTTP server that runs PHP in-process.
//!
//! Requests are served by hyper (HTTP/1.1 and h2c) and handled by a tower stack whose innermost
//! service, [`php::PhpService`], runs each request's script on a pool of OS threads that each hold
//! their own thread-safe (ZTS) PHP context, driven through tokio_php's own SAPI.
//!
//! Start PHP ([`php::PhpRuntime`]) before the tokio runtime, then a [`php::PhpPool`], then serve
//! a [`php::PhpService`] (wrapped in whatever tower layers you like) with [`server::serve`].
#![warn(missing_docs)]
#![deny(unreachable_pub)]

pub mod config;
mod conn_info;
#[doc(hidden)]
pub mod fuzz;
pub mod layer;
pub mod log;
pub mod otel;
pub mod php;
pub mod server;
pub mod stack;
mod stub;
pub mod telemetry;

pub use config::Config;
pub use conn_info::{ConnInfo, TlsInfo};
pub use stub::StubService;

/// Marks a response the server generated itself (404 for a missing script, 413, 429, 503, …)
/// rather than one a PHP script produced: [`layer::ErrorPagesLayer`] may replace its short
/// plain-text body with the configured HTML page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerGenerated;

/// A response the server answers by itself: `404 Not Found\n` as plain text, marked
/// [`ServerGenerated`] so error pages may replace it.
pub(crate) fn plain_status_response(status: http::StatusCode) -> http::Response<bytes::Bytes> {
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let mut response = http::Response::new(bytes::Bytes::from(text));
    *response.status_mut() = status;
    response.extensions_mut().insert(ServerGenerated);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Errors from bodies and services, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `SERVER_SOFTWARE` and the `Server` identity of this build.
pub const SERVER_SOFTWARE: &str = concat!("tokio_php/", env!("CARGO_PKG_VERSION"));

/// The version and git commit of this build, e.g. `0.1.0 (3f2a9c1d0b7e)`.
pub const BUILD: &str = env!("TOKIO_PHP_BUILD");

/// `SERVER_PROTOCOL` spelling of an HTTP version (`HTTP/1.1`, `HTTP/2.0`, …).
pub(crate) fn server_protocol(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}
