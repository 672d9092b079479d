//! Static files and PHP behind one URL space, as nginx's `try_files` does.
//!
//! For each request, in order:
//!
//! 1. A path with a dot-segment (`/.env`, `/.git/config`, `/app/.htaccess`) → `404`; only
//!    `/.well-known/` is served. A name that holds PHP source or a copy of it (`x.php.bak`,
//!    `x.php~`, `.x.php.swp`, `*.orig`, `*.inc`, `*.phtml`, …) → `404`. A path that tries to
//!    leave the root → `403`. A file asked for with a trailing slash (`/style.css/`) is no file.
//! 2. A path naming a PHP script (`*.php`, or `*.php/…` with `PATH_INFO`) runs it (`404` if it
//!    does not exist) — nginx's `location ~ \.php(/|$)`. PHP sources are never served as files.
//! 3. Otherwise the [`TryFilesRule`]'s candidates are tried in order (`TRY_FILES`, e.g.
//!    `$uri $uri/ /index.php?$args`): a file candidate that exists is run when it is a `*.php`
//!    script and served otherwise; a directory candidate runs the directory's `index.php` or
//!    serves its `index.html` (`403` with neither), after a `301` to the slashed URL when the
//!    request lacked the slash. When none exists, the fallback runs (an internal redirect whose
//!    query string becomes `QUERY_STRING`; `REQUEST_URI` stays the client's) or its `=CODE`
//!    answers. Without a rule the server behaves as `$uri $uri/ =404`.
//!
//! Static files are served by tower-http's `ServeFile`: the right Content-Type, `ETag` and
//! `Last-Modified` with `304` answers to `If-None-Match` / `If-Modified-Since`, `Range` → `206`
//! (several ranges → the whole file, `200`),
//! `HEAD`, and `Cache-Control: public, max-age=…` when a cache TTL is set.
//!
//! A strict front controller ([`TryFilesLayer::with_index_file`], `INDEX_FILE`) replaces steps
//! 2–3: every request that is not a static file runs that one script (as nginx's
//! `try_files $uri /index.php$is_args$args` with the script `internal`); other scripts are not
//! reachable and a direct request for the front controller is `404`.
//!
//! Scripts get the CGI variables nginx + php-fpm give them: on a rewrite `SCRIPT_NAME` and
//! `PHP_SELF` name the script that runs, `PATH_INFO` is empty and `REQUEST_URI` is the
//! client's.
//!
//! ```no_run
//! use std::time::Duration;
//! use tokio_php::layer::TryFilesLayer;
//! use tokio_php::http::DocumentRoot;
//!
//! let root = DocumentRoot::new("www")?;
//! let layer = TryFilesLayer::new(root)
//!     .with_cache_ttl(Some(Duration::from_secs(86400)))
//!     .with_rule("$uri $uri/ /index.php?$args".parse()?)?;
//! # drop(layer);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub(crate) mod route;
mod rule;

pub use rule::{RuleError, TryFilesRule};

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tower::{Layer, Service};
use tower_http::services::fs::{ServeFileSystemResponseBody, ServeFileSystemResponseFuture};
use tower_http::services::ServeFile;

use crate::http::{plain_response, BoxError, DocumentRoot, Script, WorkerMatch};
use route::{Mode, Route};

/// Routes requests to static files or PHP. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct TryFilesLayer {
    /// `None`: disabled, every request goes to the inner service.
    config: Option<Arc<Config>>,
}

#[derive(Debug, Clone)]
struct Config {
    root: DocumentRoot,
    cache_control: Option<HeaderValue>,
    mode: Mode,
    /// Worker mode: the paths the worker script serves, routed as by its front controller.
    worker: Option<(WorkerMatch, Mode)>,
}

impl TryFilesLayer {
    /// Serves files under `root` and runs the scripts there (`$uri $uri/ =404`); no cache TTL.
    pub fn new(root: DocumentRoot) -> Self {
        TryFilesLayer {
            config: Some(Arc::new(Config {
                root,
                cache_control: None,
                mode: Mode::Rule(TryFilesRule::files_only()),
                worker: None,
            })),
        }
    }

    /// Serves no files: every request goes to the inner service as it came (a server without a
    /// document root, such as the stub). The service keeps the same type as an enabled one, so
    /// a stack can switch this layer off without boxing.
    pub fn disabled() -> Self {
        TryFilesLayer { config: None }
    }

    /// `Cache-Control: public, max-age=<ttl>` on static files (`None`: no header).
    pub fn with_cache_ttl(mut self, ttl: Option<Duration>) -> Self {
        let value = ttl.map(|ttl| {
            HeaderValue::try_from(format!("public, max-age={}", ttl.as_secs()))
                .expect("digits are a valid header value")
        });
        if let Some(config) = &mut self.config {
            Arc::make_mut(config).cache_control = value;
        }
        self
    }

    /// Routes with `rule` (nginx's `try_files`), replacing any front controller. Fails when its
    /// fallback is a fixed path that does not exist inside the root — check this at startup.
    pub fn with_rule(mut self, rule: TryFilesRule) -> io::Result<Self> {
        let config = self.enabled_config()?;
        route::check_fallback(&config.root, &rule)?;
        Arc::make_mut(config).mode = Mode::Rule(rule);
        Ok(self)
    }

    /// Runs `index_file` (relative to the root) for everything that is not a static file,
    /// replacing any rule. Fails when it is not a file inside the root — check this at startup.
    pub fn with_index_file(mut self, index_file: &str) -> io::Result<Self> {
        let config = self.enabled_config()?;
        let script = config.root.front_controller(index_file)?;
        Arc::make_mut(config).mode = Mode::FrontController(script);
        Ok(self)
    }

    /// Worker mode: requests whose path `matching` selects are routed as by a front controller
    /// that is the worker script (`script`, e.g. from [`DocumentRoot::worker_script`]): static
    /// files are served, everything else runs the worker, `*.php` paths included. Other requests
    /// keep the rule or front controller set otherwise.
    pub fn with_worker(mut self, matching: WorkerMatch, script: Script) -> io::Result<Self> {
        let config = self.enabled_config()?;
        Arc::make_mut(config).worker = Some((matching, Mode::FrontController(script)));
        Ok(self)
    }

    fn enabled_config(&mut self) -> io::Result<&mut Arc<Config>> {
        self.config.as_mut().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "routing needs a document root; this layer is disabled",
            )
        })
    }
}

impl<S> Layer<S> for TryFilesLayer {
    type Service = TryFiles<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TryFiles {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service produced by [`TryFilesLayer`].
#[derive(Debug, Clone)]
pub struct TryFiles<S> {
    inner: S,
    config: Option<Arc<Config>>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for TryFiles<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>, Error = Infallible>,
    ReqBody: Send + 'static,
{
    type Response = Response<TryFilesBody<ResBody>>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let Some(config) = &self.config else {
            return ResponseFuture {
                kind: Kind::Inner {
                    future: self.inner.call(request),
                },
            };
        };
        let uri = request.uri();
        let mode = match &config.worker {
            Some((matching, worker)) if matching.matches(uri.path()) => worker,
            _ => &config.mode,
        };
        let route = route::route(&config.root, mode, uri.path(), uri.query().unwrap_or(""));
        let kind = match route {
            Route::Status(status) => Kind::Ready {
                response: Some(plain_response(status)),
            },
            Route::Redirect(location) => Kind::Ready {
                response: Some(redirect(&location)),
            },
            Route::Static(path) => Kind::Static {
                future: ServeFile::new(path).try_call(without_multiple_ranges(request)),
                cache_control: config.cache_control.clone(),
            },
            Route::Script(script) => {
                request.extensions_mut().insert(script);
                Kind::Inner {
                    future: self.inner.call(request),
                }
            }
        };
        ResponseFuture { kind }
    }
}

/// A file that routing found but that could not be opened: gone meanwhile (`404`) or unreadable
/// (`500`).
fn file_error(error: &io::Error) -> Response<Bytes> {
    if error.kind() == io::ErrorKind::NotFound || error.kind() == io::ErrorKind::NotADirectory {
        plain_response(StatusCode::NOT_FOUND)
    } else {
        tracing::error!(%error, "reading a static file failed");
        plain_response(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// `Cache-Control` on a static file's successful or `304` answer.
fn with_cache_control(
    mut response: Response<ServeFileSystemResponseBody>,
    cache_control: Option<HeaderValue>,
) -> Response<ServeFileSystemResponseBody> {
    let cacheable = response.status().is_success() || response.status() == StatusCode::NOT_MODIFIED;
    if let (Some(value), true) = (cache_control, cacheable) {
        response.headers_mut().insert(header::CACHE_CONTROL, value);
    }
    response
}

/// Several ranges would need a `multipart/byteranges` answer, which `ServeFile` refuses with
/// `416`; a server may ignore `Range` (RFC 9110 §14.2), so such a request gets the whole file.
fn without_multiple_ranges<B>(mut request: Request<B>) -> Request<B> {
    let several = request
        .headers()
        .get_all(header::RANGE)
        .iter()
        .enumerate()
        .any(|(i, value)| i > 0 || value.as_bytes().contains(&b','));
    if several {
        request.headers_mut().remove(header::RANGE);
    }
    request
}

/// `301` to the directory's slashed URL.
fn redirect(location: &str) -> Response<Bytes> {
    let mut response = plain_response(StatusCode::MOVED_PERMANENTLY);
    match HeaderValue::try_from(location) {
        Ok(value) => {
            response.headers_mut().insert(header::LOCATION, value);
            response
        }
        Err(_) => plain_response(StatusCode::BAD_REQUEST),
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`TryFiles`].
    pub struct ResponseFuture<F, ReqBody> {
        #[pin]
        kind: Kind<F, ReqBody>,
    }
}

pin_project_lite::pin_project! {
    #[project = KindProj]
    enum Kind<F, ReqBody> {
        Ready { response: Option<Response<Bytes>> },
        Static { #[pin] future: ServeFileSystemResponseFuture<ReqBody>, cache_control: Option<HeaderValue> },
        Inner { #[pin] future: F },
    }
}

impl<F, ResBody, ReqBody> Future for ResponseFuture<F, ReqBody>
where
    F: Future<Output = Result<Response<ResBody>, Infallible>>,
    ReqBody: Send + 'static,
{
    type Output = Result<Response<TryFilesBody<ResBody>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = match self.project().kind.project() {
            KindProj::Ready { response } => {
                let response = response.take().expect("polled after completion");
                response.map(TryFilesBody::fixed)
            }
            KindProj::Static {
                future,
                cache_control,
            } => match std::task::ready!(future.poll(cx)) {
                Ok(response) => {
                    with_cache_control(response, cache_control.take()).map(TryFilesBody::file)
                }
                Err(error) => file_error(&error).map(TryFilesBody::fixed),
            },
            KindProj::Inner { future } => {
                let Ok(response) = std::task::ready!(future.poll(cx));
                response.map(TryFilesBody::inner)
            }
        };
        Poll::Ready(Ok(response))
    }
}

pin_project_lite::pin_project! {
    /// The response body of [`TryFiles`]: a file, the inner service's body, or empty.
    pub struct TryFilesBody<B> {
        #[pin]
        kind: BodyKind<B>,
    }
}

pin_project_lite::pin_project! {
    #[project = BodyProj]
    enum BodyKind<B> {
        Static { #[pin] body: ServeFileSystemResponseBody },
        Inner { #[pin] body: B },
        Fixed { data: Option<Bytes> },
    }
}

impl<B> TryFilesBody<B> {
    fn file(body: ServeFileSystemResponseBody) -> Self {
        TryFilesBody {
            kind: BodyKind::Static { body },
        }
    }

    fn inner(body: B) -> Self {
        TryFilesBody {
            kind: BodyKind::Inner { body },
        }
    }

    fn fixed(data: Bytes) -> Self {
        TryFilesBody {
            kind: BodyKind::Fixed { data: Some(data) },
        }
    }
}

impl<B> Body for TryFilesBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            BodyProj::Static { body } => body.poll_frame(cx).map_err(Into::into),
            BodyProj::Inner { body } => body.poll_frame(cx).map_err(Into::into),
            BodyProj::Fixed { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Static { body } => body.is_end_stream(),
            BodyKind::Inner { body } => body.is_end_stream(),
            BodyKind::Fixed { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Static { body } => body.size_hint(),
            BodyKind::Inner { body } => body.size_hint(),
            BodyKind::Fixed { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
