//! Static files and PHP behind one URL space, as nginx's `try_files` does.
//!
//! For each request, in order:
//!
//! 1. A path with a dot-segment (`/.env`, `/.git/config`, `/app/.htaccess`) → `404`; only
//!    `/.well-known/` is served.
//! 2. A path naming a PHP script (`*.php`, or `*.php/…` with `PATH_INFO`) → PHP. PHP sources are
//!    never served as files.
//! 3. An existing regular file under the root → served by tower-http's `ServeFile`: the right
//!    Content-Type, `ETag` and `Last-Modified` with `304` answers to `If-None-Match` /
//!    `If-Modified-Since`, `Range` → `206`, `HEAD`, and `Cache-Control: public, max-age=…` when a
//!    cache TTL is set.
//! 4. Anything else → PHP: without a front controller, PHP resolves the path itself (directories
//!    run their `index.php`, the rest is `404`); with one ([`TryFilesLayer::with_index_file`],
//!    `INDEX_FILE`), every such request runs that script with the original `REQUEST_URI` and the
//!    path as `PATH_INFO` — nginx's `try_files $uri /index.php`. In that mode every other script
//!    path also goes to the front controller, and a direct request for the front controller
//!    itself is `404`.
//!
//! ```no_run
//! use std::time::Duration;
//! use tokio_php::layer::TryFilesLayer;
//! use tokio_php::php::DocumentRoot;
//!
//! let root = DocumentRoot::new("www")?;
//! let layer = TryFilesLayer::new(root)
//!     .with_cache_ttl(Some(Duration::from_secs(86400)))
//!     .with_index_file("index.php")?;
//! # drop(layer);
//! # Ok::<(), std::io::Error>(())
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tower::{Layer, Service, ServiceExt};
use tower_http::services::fs::ServeFileSystemResponseBody;
use tower_http::services::ServeFile;

use crate::php::script::decode_segments;
use crate::php::{DocumentRoot, Script};
use crate::BoxError;

/// Routes requests to static files or PHP. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct TryFilesLayer {
    config: Arc<Config>,
}

#[derive(Debug, Clone)]
struct Config {
    root: DocumentRoot,
    cache_control: Option<HeaderValue>,
    front_controller: Option<Script>,
}

impl TryFilesLayer {
    /// Serves files under `root`; no cache TTL, no front controller.
    pub fn new(root: DocumentRoot) -> Self {
        TryFilesLayer {
            config: Arc::new(Config {
                root,
                cache_control: None,
                front_controller: None,
            }),
        }
    }

    /// `Cache-Control: public, max-age=<ttl>` on static files (`None`: no header).
    pub fn with_cache_ttl(mut self, ttl: Option<Duration>) -> Self {
        let value = ttl.map(|ttl| {
            HeaderValue::try_from(format!("public, max-age={}", ttl.as_secs()))
                .expect("digits are a valid header value")
        });
        Arc::make_mut(&mut self.config).cache_control = value;
        self
    }

    /// Runs `index_file` (relative to the root) for everything that is not a static file. Fails
    /// when it is not a file inside the root — check this at startup.
    pub fn with_index_file(mut self, index_file: &str) -> io::Result<Self> {
        let script = self.config.root.front_controller(index_file)?;
        Arc::make_mut(&mut self.config).front_controller = Some(script);
        Ok(self)
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
    config: Arc<Config>,
}

/// Where one request goes.
#[derive(Debug, PartialEq)]
enum Route {
    NotFound,
    Static(PathBuf),
    Php,
    FrontController(Script),
}

impl Config {
    fn route(&self, uri_path: &str) -> Route {
        let Some(segments) = decode_segments(uri_path) else {
            return Route::Php; // PHP refuses it with 403
        };
        if is_hidden(&segments) {
            return Route::NotFound;
        }
        if let Some(front) = &self.front_controller {
            return self.route_with_front_controller(&segments, front);
        }
        if names_script(&segments) {
            return Route::Php;
        }
        match self.existing_file(&segments) {
            Some(file) => Route::Static(file),
            None => Route::Php,
        }
    }

    fn route_with_front_controller(&self, segments: &[String], front: &Script) -> Route {
        let path = format!("/{}", segments.join("/"));
        if path == front.script_name || path.starts_with(&format!("{}/", front.script_name)) {
            return Route::NotFound;
        }
        if !names_script(segments) {
            if let Some(file) = self.existing_file(segments) {
                return Route::Static(file);
            }
        }
        Route::FrontController(Script {
            path_info: path,
            ..front.clone()
        })
    }

    /// The regular file at this path, if it exists and stays inside the root.
    fn existing_file(&self, segments: &[String]) -> Option<PathBuf> {
        if segments.is_empty() {
            return None;
        }
        let path = self.root.path().join(segments.join("/"));
        let real = path.canonicalize().ok()?;
        (real.starts_with(self.root.path()) && real.is_file()).then_some(real)
    }
}

fn is_hidden(segments: &[String]) -> bool {
    segments
        .iter()
        .enumerate()
        .any(|(i, s)| s.starts_with('.') && !(i == 0 && s == ".well-known"))
}

fn names_script(segments: &[String]) -> bool {
    segments.iter().any(|s| s.ends_with(".php"))
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for TryFiles<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>, Error = Infallible>,
    ReqBody: Send + 'static,
{
    type Response = Response<TryFilesBody<ResBody>>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let kind = match self.config.route(request.uri().path()) {
            Route::NotFound => Kind::Ready {
                response: Some(not_found()),
            },
            Route::Static(path) => Kind::Static {
                future: Box::pin(serve_static(
                    path,
                    request,
                    self.config.cache_control.clone(),
                )),
            },
            Route::Php => Kind::Inner {
                future: self.inner.call(request),
            },
            Route::FrontController(script) => {
                request.extensions_mut().insert(script);
                Kind::Inner {
                    future: self.inner.call(request),
                }
            }
        };
        ResponseFuture { kind }
    }
}

async fn serve_static<ReqBody: Send + 'static>(
    path: PathBuf,
    request: Request<ReqBody>,
    cache_control: Option<HeaderValue>,
) -> Response<ServeFileSystemResponseBody> {
    let Ok(mut response) = ServeFile::new(path).oneshot(request).await;
    let cacheable = response.status().is_success() || response.status() == StatusCode::NOT_MODIFIED;
    if let (Some(value), true) = (cache_control, cacheable) {
        response.headers_mut().insert(header::CACHE_CONTROL, value);
    }
    response
}

fn not_found() -> Response<&'static str> {
    let mut response = Response::new("404 Not Found\n");
    *response.status_mut() = StatusCode::NOT_FOUND;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response.extensions_mut().insert(crate::ServerGenerated);
    response
}

type StaticFuture = Pin<Box<dyn Future<Output = Response<ServeFileSystemResponseBody>> + Send>>;

pin_project_lite::pin_project! {
    /// The response future of [`TryFiles`].
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Ready { response: Option<Response<&'static str>> },
        Static { future: StaticFuture },
        Inner { #[pin] future: F },
    }
}

impl<F, ResBody> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, Infallible>>,
{
    type Output = Result<Response<TryFilesBody<ResBody>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = match self.project().kind.project() {
            KindProj::Ready { response } => {
                let response = response.take().expect("polled after completion");
                response.map(TryFilesBody::text)
            }
            KindProj::Static { future } => {
                let response = std::task::ready!(future.as_mut().poll(cx));
                response.map(TryFilesBody::file)
            }
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

    fn text(text: &'static str) -> Self {
        TryFilesBody {
            kind: BodyKind::Fixed {
                data: Some(Bytes::from_static(text.as_bytes())),
            },
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("css")).unwrap();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::create_dir_all(root.join(".well-known")).unwrap();
        for file in [
            "index.php",
            "app.php",
            "css/site.css",
            ".env",
            ".git/config",
            ".well-known/security.txt",
            "robots.txt",
        ] {
            std::fs::write(root.join(file), "x").unwrap();
        }
        let config = Config {
            root: DocumentRoot::new(root).unwrap(),
            cache_control: None,
            front_controller: None,
        };
        (dir, config)
    }

    fn is_static(route: Route) -> bool {
        matches!(route, Route::Static(_))
    }

    #[test]
    fn files_php_and_hidden_paths_are_told_apart() {
        let (_dir, config) = fixture();
        assert!(is_static(config.route("/css/site.css")));
        assert!(is_static(config.route("/robots.txt")));
        assert!(is_static(config.route("/.well-known/security.txt")));
        assert_eq!(
            config.route("/app.php"),
            Route::Php,
            "scripts are never served as files"
        );
        assert_eq!(config.route("/app.php/extra"), Route::Php);
        assert_eq!(config.route("/missing.css"), Route::Php, "PHP answers 404");
        assert_eq!(config.route("/"), Route::Php);
        for hidden in ["/.env", "/.git/config", "/css/.htaccess", "/%2egit/config"] {
            assert_eq!(config.route(hidden), Route::NotFound, "{hidden}");
        }
    }

    #[test]
    fn a_front_controller_takes_everything_but_static_files() {
        let (_dir, mut config) = fixture();
        config.front_controller = Some(config.root.front_controller("index.php").unwrap());
        assert!(is_static(config.route("/css/site.css")));
        for (path, path_info) in [
            ("/", "/"),
            ("/blog/42", "/blog/42"),
            ("/app.php", "/app.php"),
            ("/missing.css", "/missing.css"),
        ] {
            match config.route(path) {
                Route::FrontController(script) => {
                    assert_eq!(script.script_name, "/index.php");
                    assert_eq!(script.path_info, path_info, "{path}");
                }
                other => panic!("{path}: {other:?}"),
            }
        }
        assert_eq!(
            config.route("/index.php"),
            Route::NotFound,
            "no direct access to the front controller"
        );
        assert_eq!(config.route("/index.php/x"), Route::NotFound);
        assert_eq!(config.route("/.env"), Route::NotFound);
    }

    #[test]
    fn a_missing_front_controller_is_an_error() {
        let (_dir, config) = fixture();
        assert!(config.root.front_controller("missing.php").is_err());
        assert!(config.root.front_controller("../outside.php").is_err());
        assert!(
            config.root.front_controller("css").is_err(),
            "a directory is not a script"
        );
    }
}
