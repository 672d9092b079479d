//! What the layers and [`PhpService`](crate::php::PhpService) share: the request and response
//! extension types they hand each other, URL → script routing, request body collection, the
//! output spool between a worker thread and a response body, and the plain-text responses the
//! server answers by itself.
//!
//! This module depends on no other part of the crate; everything else may depend on it (see
//! `docs/architecture.md`).

mod body;
mod conn_info;
mod deadline;
mod extensions;
mod route;
mod spool;
mod trace;
mod worker_match;

pub use body::BodyLimits;
pub(crate) use body::{collect_body, BodyError, RequestBody};
pub use conn_info::{ConnInfo, Forwarded, TlsInfo};
pub use deadline::Deadline;
pub use extensions::{FlushedEarly, PhpIni, PhpTimings, ServerGenerated, ServerVars};
pub(crate) use route::{
    decode_segments, filename_bytes, join_url_path, split_segments, INDEX_SCRIPT,
};
pub use route::{DocumentRoot, Resolution, Script};
pub use spool::IncompleteResponse;
pub(crate) use spool::{spool, DiskBudget, SpoolLimits, SpoolReader, SpoolWriter};
pub use trace::{RequestId, TraceContext};
pub(crate) use trace::{TRACEPARENT, TRACESTATE};
pub use worker_match::{InvalidWorkerMatch, WorkerMatch};

use std::convert::Infallible;

use ::http::header::{HeaderValue, CONTENT_TYPE};
use ::http::{Request, Response, StatusCode, Version};
use bytes::Bytes;
use tower::Service;

/// What serving a service over connections asks of it, spelled once: a `tower::Service` from
/// `Request<ReqBody>` to `Response<ResBody>` that never fails (errors are responses), is cheap to
/// clone (one clone per connection) and whose futures can move between threads. Every service
/// that meets the bounds implements it.
pub trait HttpService<ReqBody, ResBody>:
    Service<
        Request<ReqBody>,
        Response = Response<ResBody>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S, ReqBody, ResBody> HttpService<ReqBody, ResBody> for S where
    S: Service<
            Request<ReqBody>,
            Response = Response<ResBody>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// What hyper asks of a response body, spelled once: it can move between threads and its
/// errors can be boxed.
pub trait HttpBody: http_body::Body<Data: Send, Error: Into<BoxError>> + Send + 'static {}

impl<B> HttpBody for B where B: http_body::Body<Data: Send, Error: Into<BoxError>> + Send + 'static {}

/// Errors from bodies and services, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `SERVER_SOFTWARE` and the `Server` identity of this build.
pub const SERVER_SOFTWARE: &str = concat!("tokio_php/", env!("CARGO_PKG_VERSION"));

/// The version and git commit of this build, e.g. `0.1.0 (3f2a9c1d0b7e)`.
pub const BUILD: &str = env!("TOKIO_PHP_BUILD");

/// A response the server answers by itself: `404 Not Found\n` as plain text, marked
/// [`ServerGenerated`] so error pages may replace it.
pub fn plain_response(status: StatusCode) -> Response<Bytes> {
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    plain_response_with(status, text)
}

/// Like [`plain_response`] with its own text (which should end with a newline).
pub fn plain_response_with(status: StatusCode, text: impl Into<Bytes>) -> Response<Bytes> {
    let mut response = Response::new(text.into());
    *response.status_mut() = status;
    response.extensions_mut().insert(ServerGenerated);
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The `SERVER_PROTOCOL` spelling of an HTTP version (`HTTP/1.1`, `HTTP/2.0`, …), also used by
/// the access log and the profiling headers.
pub fn protocol_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}
