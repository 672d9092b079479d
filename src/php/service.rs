//! [`PhpService`]: a `tower::Service` that runs requests on the PHP worker pool.

use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use tokio::sync::oneshot;
use tower::Service;

use super::pool::{Job, PhpPool, Rejected, Submitter};
use super::request::{PhpRequest, ServerIdentity};
use super::response::PhpBody;
use crate::http::{
    collect_body, plain_response, BodyError, BodyLimits, BoxError, ConnInfo, Deadline,
    DocumentRoot, Resolution, Script, WorkerMatch, SERVER_SOFTWARE,
};

/// Settings of a [`PhpService`].
#[derive(Debug, Clone)]
pub struct PhpServiceConfig {
    /// Scripts are resolved under this root.
    pub document_root: DocumentRoot,
    /// Request body bounds.
    pub body_limits: BodyLimits,
    /// `SERVER_SOFTWARE`.
    pub server_software: String,
}

impl PhpServiceConfig {
    /// Settings with the default body limits and `SERVER_SOFTWARE`.
    pub fn new(document_root: DocumentRoot) -> Self {
        PhpServiceConfig {
            document_root,
            body_limits: BodyLimits::default(),
            server_software: SERVER_SOFTWARE.to_string(),
        }
    }
}

/// Runs each request's PHP script on a [`PhpPool`] and streams the response.
///
/// The request body is read completely (bounded, spilling to a temporary file) before a worker
/// is taken. A full queue answers `503` with `Retry-After` at once.
///
/// ```no_run
/// use tokio_php::{http::DocumentRoot, php::{PhpPool, PhpRuntime, PhpRuntimeConfig, PhpService, PhpServiceConfig, PoolConfig}};
///
/// let runtime = PhpRuntime::start(PhpRuntimeConfig::default())?;
/// let pool = PhpPool::start(PoolConfig::default())?;
/// let service = PhpService::new(&pool, PhpServiceConfig::new(DocumentRoot::new("www")?));
/// // `service` is a `tower::Service<http::Request<B>>`: wrap it in layers and serve it.
/// # drop(service); pool.shutdown(std::time::Duration::from_secs(5)); runtime.shutdown();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// A service on a worker-mode pool ([`PhpPool::start_workers`]) runs every request on the
/// pool's worker script; [`PhpService::route_to_workers`] sends only some requests there.
#[derive(Debug, Clone)]
pub struct PhpService {
    pool: Submitter,
    /// Requests that go to a worker-mode pool instead of `pool`.
    workers: Option<(WorkerMatch, Submitter)>,
    settings: Arc<Settings>,
}

#[derive(Debug)]
struct Settings {
    document_root: DocumentRoot,
    body_limits: BodyLimits,
    identity: ServerIdentity,
}

impl PhpService {
    /// A service submitting to `pool`.
    pub fn new(pool: &PhpPool, config: PhpServiceConfig) -> Self {
        let identity = ServerIdentity {
            software: config.server_software,
            document_root: path_string(config.document_root.path()),
        };
        PhpService {
            pool: pool.submitter(),
            workers: None,
            settings: Arc::new(Settings {
                document_root: config.document_root,
                body_limits: config.body_limits,
                identity,
            }),
        }
    }

    /// Sends the requests `matching` selects to `workers`, a worker-mode pool, and the rest to
    /// this service's own pool (`WORKER_MATCH=/api`).
    pub fn route_to_workers(mut self, matching: WorkerMatch, workers: &PhpPool) -> Self {
        self.workers = Some((matching, workers.submitter()));
        self
    }

    /// The pool a request for `path` goes to.
    fn pool_for(&self, path: &str) -> &Submitter {
        match &self.workers {
            Some((matching, workers)) if matching.matches(path) => workers,
            _ => &self.pool,
        }
    }
}

fn path_string(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

impl<B> Service<Request<B>> for PhpService
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<PhpBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Back-pressure is the bounded queue: a full one answers 503 instead of waiting.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let service = self.clone();
        ResponseFuture {
            inner: Box::pin(async move { Ok(service.handle(request).await) }),
        }
    }
}

/// The response future of [`PhpService`].
pub struct ResponseFuture {
    inner: Pin<Box<dyn Future<Output = Result<Response<PhpBody>, Infallible>> + Send>>,
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<PhpBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl PhpService {
    async fn handle<B>(self, mut request: Request<B>) -> Response<PhpBody>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let settings = &self.settings;
        let received = Instant::now();
        let pool = self.pool_for(request.uri().path());
        let routed = request.extensions_mut().remove::<Script>();
        let resolved = match (pool.worker_script(), routed) {
            (Some(worker), routed) => Resolution::Script(worker_request_script(worker, routed)),
            (None, Some(script)) => Resolution::Script(script),
            (None, None) => settings.document_root.resolve(request.uri().path()),
        };
        let script = match resolved {
            Resolution::Script(script) => script,
            Resolution::NotFound => return error_response(StatusCode::NOT_FOUND),
            Resolution::Forbidden => return error_response(StatusCode::FORBIDDEN),
        };
        let (parts, body) = request.into_parts();
        let conn = parts
            .extensions
            .get::<ConnInfo>()
            .copied()
            .unwrap_or_else(unknown_connection);
        let declared_len = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        // A timeout while the client still sends the body is its fault: 408, not 504.
        let deadline = parts.extensions.get::<Deadline>().cloned();
        if let Some(deadline) = &deadline {
            deadline.receiving_body(true);
        }
        let body = collect_body(body, declared_len, settings.body_limits).await;
        if let Some(deadline) = &deadline {
            deadline.receiving_body(false);
        }
        let body = match body {
            Ok(body) => body,
            Err(error) => return body_error_response(error),
        };
        let Ok(php_request) = PhpRequest::new(&parts, &script, body, &conn, &settings.identity)
        else {
            return error_response(StatusCode::BAD_REQUEST);
        };
        let is_head = parts.method == Method::HEAD;
        let (reply, started) = oneshot::channel();
        let job = Job {
            request: php_request,
            reply,
            queued_at: Instant::now(),
            span: tracing::Span::current(),
            deadline,
            parse_time: received.elapsed(),
            runtime: tokio::runtime::Handle::try_current().ok(),
        };
        match pool.try_submit(job) {
            Ok(()) => {}
            Err(Rejected::QueueFull) => {
                tracing::warn!("PHP queue full; answering 503");
                return overloaded_response();
            }
            Err(Rejected::Closed) => return overloaded_response(),
        }
        match started.await {
            Ok(start) => start.into_response(is_head),
            // The worker dropped the job without answering: PHP overflowed its stack before any
            // output left (or the worker died mid-request).
            Err(_) => error_response(StatusCode::INTERNAL_SERVER_ERROR),
        }
    }
}

/// A worker-mode request's script: the worker script, with the `PATH_INFO` and query string a
/// front-controller rewrite (`TRY_FILES`) gave the request, if any.
fn worker_request_script(worker: &Script, routed: Option<Script>) -> Script {
    let mut script = worker.clone();
    if let Some(routed) = routed {
        script.path_info = routed.path_info;
        script.query_string = routed.query_string;
    }
    script
}

fn unknown_connection() -> ConnInfo {
    let unspecified = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
    ConnInfo::tcp(unspecified, unspecified)
}

fn body_error_response(error: BodyError) -> Response<PhpBody> {
    match error {
        BodyError::TooLarge => error_response(StatusCode::PAYLOAD_TOO_LARGE),
        BodyError::Read(e) => {
            tracing::debug!(error = %e, "request body could not be read");
            error_response(StatusCode::BAD_REQUEST)
        }
        BodyError::Spill(e) => {
            tracing::error!(error = %e, "request body could not be buffered to a temporary file");
            error_response(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

/// A short plain-text error, e.g. `413 Payload Too Large`.
pub(crate) fn error_response(status: StatusCode) -> Response<PhpBody> {
    plain_response(status).map(PhpBody::full)
}

fn overloaded_response() -> Response<PhpBody> {
    let mut response = error_response(StatusCode::SERVICE_UNAVAILABLE);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}
