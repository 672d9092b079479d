//! The server's layer stack, built from [`Config`] — the one place the layers are ordered.
//!
//! Outermost first:
//!
//! ```text
//! TrustForwardedLayer TRUSTED_PROXIES: client address, scheme, port from a trusted balancer
//! PropagateTraceContextLayer   traceparent in/out, trace/span ids for everything below
//! OtelLayer           OTEL_EXPORTER_OTLP_ENDPOINT: server span (+ PHP child span) over OTLP
//! SetRequestIdLayer      X-Request-ID, in every log line
//! RecordMetricsLayer        Prometheus counters and latency histogram
//! AccessLogLayer      ACCESS_LOG=1: one line per request, after its body is sent
//! ProfileLayer        PROFILE=1: X-Profile-* timings on request
//! RateLimitLayer      RATE_LIMIT>0: 429 per client IP
//! ErrorPagesLayer     ERROR_PAGES_DIR: HTML pages for empty / server-generated errors
//! ValidateRequestLayer 400 for a bad Host / Transfer-Encoding (RFC 9112); OPTIONS *
//! CompressionLayer    zstd / brotli / gzip for text-like bodies
//! TryFilesLayer       static files | PHP | TRY_FILES rule or INDEX_FILE front controller
//! TimeoutLayer        REQUEST_TIMEOUT: 504 and the script stopped; heartbeat-extendable
//!   inner service     PhpService (or StubService with USE_STUB=1)
//! ```
//!
//! The client is settled first, so that every layer that reports it or keys on it (OTel, access
//! log, rate limit) and PHP see the same one; the trace and request ids come next so every later
//! layer logs with them; the access log sits
//! outside the rate limiter and error pages so it records 429s and the final status; compression
//! sits inside error pages (no point compressing a small HTML page) and outside static files;
//! the timeout covers PHP only, not static files.
//!
//! The stack has one type whatever the configuration: optional layers that keep the body type
//! are `option_layer`s (an `Either`, no allocation) and those that change it (error pages, rate
//! limit, access log, try_files) have a disabled mode. So it is boxed once, at the top
//! ([`StackService`]): per request, one allocation for the future and one for the body. The
//! inner service may box on its own ([`PhpService`](crate::php::PhpService) boxes its async
//! handling, one more future; [`StubService`](crate::StubService) does not). A test counts the
//! boxes in the stack's types. To build a different stack, use the layers in [`crate::layer`]
//! with `tower::ServiceBuilder` directly (`examples/custom_stack.rs`).

use std::convert::Infallible;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use tower::util::BoxCloneService;
use tower::{Service, ServiceBuilder, ServiceExt};

use crate::config::Config;
use crate::http::{BoxError, DocumentRoot, HttpService, Script, WorkerMatch};
use crate::layer::forwarded::TrustedProxies;
use crate::layer::try_files::TryFilesRule;
use crate::layer::{
    AccessLogLayer, CompressionLayer, ErrorPagesLayer, OtelLayer, ProfileLayer,
    PropagateTraceContextLayer, RateLimitLayer, RecordMetricsLayer, SetRequestIdLayer,
    TimeoutLayer, TrustForwardedLayer, TryFilesLayer, ValidateRequestLayer,
};
use crate::telemetry::Metrics;
use opentelemetry_sdk::trace::SdkTracer;

/// The body every stack answers with.
pub type StackBody = UnsyncBoxBody<Bytes, BoxError>;

/// A built stack: cheap to clone, one per connection.
pub type StackService<ReqBody> = BoxCloneService<Request<ReqBody>, Response<StackBody>, Infallible>;

/// What the stack needs to know, taken from [`Config`].
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// Static files and scripts live here (`None`: no static files, e.g. for the stub).
    pub document_root: Option<DocumentRoot>,
    /// `REQUEST_TIMEOUT` (`None`: off).
    pub request_timeout: Option<Duration>,
    /// `RATE_LIMIT` per `RATE_WINDOW` (`None`: off).
    pub rate_limit: Option<(u32, Duration)>,
    /// `TRUSTED_PROXIES` (empty: forwarding headers change nothing).
    pub trusted_proxies: TrustedProxies,
    /// `STATIC_CACHE_TTL`.
    pub static_cache_ttl: Option<Duration>,
    /// `INDEX_FILE` (strict front controller); not together with `try_files`.
    pub index_file: Option<String>,
    /// `TRY_FILES` (nginx's try_files); not together with `index_file`.
    pub try_files: Option<TryFilesRule>,
    /// Worker mode (`WORKER_MATCH`, `WORKER_SCRIPT`): the paths the worker script serves, routed
    /// to it as to a front controller.
    pub worker: Option<(WorkerMatch, Script)>,
    /// `ERROR_PAGES_DIR`.
    pub error_pages: Option<ErrorPagesLayer>,
    /// `PROFILE=1`.
    pub profile: bool,
    /// `ACCESS_LOG=1`.
    pub access_log: bool,
    /// Where request metrics are recorded (served by the internal server).
    pub metrics: Metrics,
    /// Records request spans for OTLP export (`None`: no OpenTelemetry).
    pub otel: Option<SdkTracer>,
}

impl StackConfig {
    /// Reads the stack settings from `config`, loading what must be checked at startup (the
    /// document root, error pages). Errors name the variable at fault.
    pub fn from_config(config: &Config) -> Result<StackConfig, StackError> {
        let document_root = match DocumentRoot::new(&config.document_root) {
            Ok(root) => Some(root),
            Err(_) if config.use_stub => None,
            Err(source) => {
                return Err(StackError::DocumentRoot {
                    path: config.document_root.clone(),
                    source,
                })
            }
        };
        let error_pages =
            match config.error_pages_dir.as_str() {
                "" => None,
                dir => Some(ErrorPagesLayer::from_dir(dir).map_err(|source| {
                    StackError::ErrorPages {
                        dir: dir.into(),
                        source,
                    }
                })?),
            };
        let index_file = Some(config.index_file.clone()).filter(|f| !f.is_empty());
        let worker = match (&document_root, config.worker_script.as_str()) {
            (Some(root), path) if !path.is_empty() => {
                let script =
                    root.worker_script(path)
                        .map_err(|source| StackError::WorkerScript {
                            path: path.into(),
                            source,
                        })?;
                Some((config.worker_match.clone(), script))
            }
            _ => None,
        };
        let stack_config = StackConfig {
            document_root,
            request_timeout: config.request_timeout,
            rate_limit: (config.rate_limit > 0)
                .then(|| (config.rate_limit, Duration::from_secs(config.rate_window))),
            trusted_proxies: config.trusted_proxies.clone(),
            static_cache_ttl: config.static_cache_ttl,
            index_file,
            try_files: config.try_files.clone(),
            worker,
            error_pages,
            profile: config.profile,
            access_log: config.access_log,
            metrics: Metrics::new(),
            otel: None,
        };
        // Checked now, before PHP starts, so a typo fails fast with a clear message.
        if let Some(root) = &stack_config.document_root {
            try_files(&stack_config, root)?;
        }
        Ok(stack_config)
    }
}

/// Wraps `inner` (a [`PhpService`](crate::php::PhpService) or
/// [`StubService`](crate::StubService)) in the stack and erases its type: the one box of the
/// stack (see the [module docs](self)). Fails when `INDEX_FILE` is not a file inside the document
/// root, when the `TRY_FILES` fallback does not exist, or when both are set.
pub fn build<S, ReqBody, ResBody>(
    config: &StackConfig,
    inner: S,
) -> Result<StackService<ReqBody>, StackError>
where
    S: HttpService<ReqBody, ResBody>,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Default + Send + 'static,
    ResBody::Error: Into<BoxError> + Send + Sync,
{
    let service = layered(config, inner)?;
    Ok(BoxCloneService::new(service.map_response(|response| {
        response.map(|body| body.map_err(Into::into).boxed_unsync())
    })))
}

/// The stack around `inner`, unboxed. Its type is the same whatever the configuration: a layer
/// that is off is either an `option_layer` (an `Either`, for layers that keep the body type) or
/// the layer in its disabled mode.
fn layered<S, ReqBody, ResBody>(
    config: &StackConfig,
    inner: S,
) -> Result<
    impl Service<
            Request<ReqBody>,
            Response = Response<impl Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static,
    StackError,
>
where
    S: HttpService<ReqBody, ResBody>,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Default + Send + 'static,
    ResBody::Error: Into<BoxError> + Send + Sync,
{
    let try_files = match &config.document_root {
        Some(root) => try_files(config, root)?,
        None => TryFilesLayer::disabled(),
    };
    let rate_limit = match config.rate_limit {
        Some((limit, window)) => RateLimitLayer::new(limit, window),
        None => RateLimitLayer::disabled(),
    };
    let access_log = if config.access_log {
        AccessLogLayer::new()
    } else {
        AccessLogLayer::disabled()
    };
    let error_pages = config
        .error_pages
        .clone()
        .unwrap_or_else(ErrorPagesLayer::disabled);
    let trusted_proxies = Some(config.trusted_proxies.clone()).filter(|t| !t.is_empty());
    Ok(ServiceBuilder::new()
        .option_layer(trusted_proxies.map(TrustForwardedLayer::new))
        .layer(PropagateTraceContextLayer::new())
        .option_layer(config.otel.clone().map(OtelLayer::new))
        .layer(SetRequestIdLayer::new())
        .layer(RecordMetricsLayer::new(config.metrics.clone()))
        .layer(access_log)
        .option_layer(config.profile.then(ProfileLayer::new))
        .layer(rate_limit)
        .layer(error_pages)
        .layer(ValidateRequestLayer::new())
        .layer(CompressionLayer::new())
        .layer(try_files)
        .option_layer(config.request_timeout.map(TimeoutLayer::new))
        .service(inner))
}

fn try_files(config: &StackConfig, root: &DocumentRoot) -> Result<TryFilesLayer, StackError> {
    let layer = routing(config, root)?;
    match &config.worker {
        Some((matching, script)) => {
            layer
                .with_worker(matching.clone(), script.clone())
                .map_err(|source| StackError::WorkerScript {
                    path: script.filename.clone(),
                    source,
                })
        }
        None => Ok(layer),
    }
}

fn routing(config: &StackConfig, root: &DocumentRoot) -> Result<TryFilesLayer, StackError> {
    let layer = TryFilesLayer::new(root.clone()).with_cache_ttl(config.static_cache_ttl);
    match (&config.index_file, &config.try_files) {
        (None, None) => Ok(layer),
        (Some(index_file), None) => {
            layer
                .with_index_file(index_file)
                .map_err(|source| StackError::IndexFile {
                    index_file: index_file.clone(),
                    source,
                })
        }
        (None, Some(rule)) => {
            layer
                .with_rule(rule.clone())
                .map_err(|source| StackError::TryFiles {
                    rule: rule.clone(),
                    source,
                })
        }
        (Some(_), Some(_)) => Err(StackError::IndexFileAndTryFiles),
    }
}

/// Why the stack could not be built, naming the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// `DOCUMENT_ROOT` cannot be opened.
    #[error("DOCUMENT_ROOT={}: {source}", path.display())]
    DocumentRoot {
        /// The configured root.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// `ERROR_PAGES_DIR` cannot be read.
    #[error("ERROR_PAGES_DIR={}: {source}", dir.display())]
    ErrorPages {
        /// The configured directory.
        dir: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// `INDEX_FILE` is not a file inside the document root.
    #[error("INDEX_FILE={index_file}: {source}")]
    IndexFile {
        /// The configured front controller.
        index_file: String,
        /// Why.
        source: io::Error,
    },
    /// The `TRY_FILES` fallback cannot be served.
    #[error("TRY_FILES={rule}: {source}")]
    TryFiles {
        /// The configured rule.
        rule: TryFilesRule,
        /// Why.
        source: io::Error,
    },
    /// Both routing modes at once.
    #[error("INDEX_FILE and TRY_FILES are both set; set one")]
    IndexFileAndTryFiles,
    /// `WORKER_SCRIPT` cannot be routed to.
    #[error("WORKER_SCRIPT={}: {source}", path.display())]
    WorkerScript {
        /// The worker script.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stub::StubService;

    fn future_type<S: Service<R>, R>(_: &S) -> &'static str {
        std::any::type_name::<S::Future>()
    }

    fn body_type<S, R, B>(_: &S) -> &'static str
    where
        S: Service<R, Response = Response<B>>,
    {
        std::any::type_name::<B>()
    }

    /// Boxed futures in a future's type name.
    fn boxed_futures(type_name: &str) -> usize {
        type_name
            .matches("Box<dyn core::future::future::Future")
            .count()
    }

    /// Boxed bodies in a body's type name.
    fn boxed_bodies(type_name: &str) -> usize {
        type_name.matches("BoxBody<").count() + type_name.matches("Box<dyn http_body::").count()
    }

    fn every_layer_on(root: &std::path::Path) -> StackConfig {
        StackConfig {
            document_root: Some(DocumentRoot::new(root).unwrap()),
            request_timeout: Some(Duration::from_secs(5)),
            rate_limit: Some((10, Duration::from_secs(1))),
            trusted_proxies: "10.0.0.0/8".parse().unwrap(),
            static_cache_ttl: None,
            index_file: None,
            worker: None,
            try_files: None,
            error_pages: Some(ErrorPagesLayer::from_pages(Default::default())),
            profile: true,
            access_log: true,
            metrics: Metrics::new(),
            otel: None,
        }
    }

    fn every_layer_off(root: &std::path::Path) -> StackConfig {
        StackConfig {
            document_root: None,
            request_timeout: None,
            rate_limit: None,
            trusted_proxies: TrustedProxies::default(),
            error_pages: None,
            profile: false,
            access_log: false,
            ..every_layer_on(root)
        }
    }

    #[test]
    fn the_stack_boxes_only_at_the_top() {
        let root = tempfile::tempdir().unwrap();
        for config in [every_layer_on(root.path()), every_layer_off(root.path())] {
            let unboxed = layered::<_, (), _>(&config, StubService).unwrap();
            let (future, body) = (future_type(&unboxed), body_type(&unboxed));
            assert_eq!(boxed_futures(future), 0, "{future}");
            assert_eq!(boxed_bodies(body), 0, "{body}");
            let stack = build::<_, (), _>(&config, StubService).unwrap();
            let (future, body) = (future_type(&stack), body_type(&stack));
            assert_eq!(boxed_futures(future), 1, "{future}");
            assert_eq!(boxed_bodies(body), 1, "{body}");
        }
    }

    #[test]
    fn switching_layers_off_keeps_the_stack_type() {
        let root = tempfile::tempdir().unwrap();
        let on = layered::<_, (), _>(&every_layer_on(root.path()), StubService).unwrap();
        let off = layered::<_, (), _>(&every_layer_off(root.path()), StubService).unwrap();
        assert_eq!(
            std::any::type_name_of_val(&on),
            std::any::type_name_of_val(&off)
        );
    }
}
