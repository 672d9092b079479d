//! The tower layers that make up tokio_php's server, each usable on its own with
//! `tower::ServiceBuilder`.
//!
//! [`crate::stack`] orders them from [`crate::Config`]; the default order, outermost first:
//!
//! | layer | what it does |
//! |---|---|
//! | [`TraceContextLayer`] | W3C `traceparent` in and out, a span id per request |
//! | [`RequestIdLayer`] | `X-Request-ID` kept (if sane) or derived from the trace |
//!
//! Layers share what they learn through typed request extensions: [`TraceContext`],
//! [`RequestId`], [`crate::ConnInfo`], and [`crate::php::ServerVars`] for values PHP should see
//! in `$_SERVER`.

pub mod trace_context;

pub use trace_context::{TraceContext, TraceContextLayer, TraceContextService};
pub mod request_id;

pub use request_id::{RequestId, RequestIdLayer, RequestIdService};
pub mod access_log;

pub use access_log::{AccessLog, AccessLogBody, AccessLogLayer};
pub mod rate_limit;

pub use rate_limit::{RateLimit, RateLimitLayer};
pub mod timeout;

pub use timeout::{Deadline, Timeout, TimeoutLayer};
pub mod compression;

pub use compression::{Compressible, CompressionLayer};
pub mod try_files;

pub use try_files::{TryFiles, TryFilesBody, TryFilesLayer};
pub mod error_pages;

pub use error_pages::{ErrorPages, ErrorPagesLayer};
pub mod profile;

pub use profile::{Profile, ProfileLayer};
