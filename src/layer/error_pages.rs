//! Custom HTML error pages for browsers.
//!
//! `ERROR_PAGES_DIR/{status}.html` files (e.g. `404.html`, `503.html`) are read once, at startup.
//! A 4xx/5xx response gets its page when the request's `Accept` lists `text/html` and the
//! response has nothing of its own to show: an empty body, or a short error the server generated
//! itself ([`ServerGenerated`]). Pages a PHP script rendered are never replaced, and API clients
//! (no `text/html` in `Accept`) keep the plain response.
//!
//! ```no_run
//! use tokio_php::layer::ErrorPagesLayer;
//!
//! let layer = ErrorPagesLayer::from_dir("www/errors")?;
//! # drop(layer);
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! [`ServerGenerated`]: crate::http::ServerGenerated

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{Either, Full};
use tower::{Layer, Service};

use crate::http::ServerGenerated;

/// Replaces empty error responses with HTML pages. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct ErrorPagesLayer {
    pages: Arc<HashMap<StatusCode, Bytes>>,
}

impl ErrorPagesLayer {
    /// Loads every `NNN.html` (NNN a 4xx/5xx status) in `dir`. Other files are ignored.
    pub fn from_dir(dir: impl AsRef<Path>) -> io::Result<Self> {
        let dir = dir.as_ref();
        let mut pages = HashMap::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(status) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".html"))
                .and_then(|code| code.parse::<u16>().ok())
                .and_then(|code| StatusCode::from_u16(code).ok())
                .filter(|s| s.is_client_error() || s.is_server_error())
            else {
                continue;
            };
            pages.insert(status, Bytes::from(std::fs::read(entry.path())?));
        }
        tracing::info!(dir = %dir.display(), pages = pages.len(), "error pages loaded");
        Ok(ErrorPagesLayer::from_pages(pages))
    }

    /// Uses these pages.
    pub fn from_pages(pages: HashMap<StatusCode, Bytes>) -> Self {
        ErrorPagesLayer {
            pages: Arc::new(pages),
        }
    }

    /// Replaces nothing. The service keeps the same type as an enabled one, so a stack can
    /// switch this layer off without boxing.
    pub fn disabled() -> Self {
        ErrorPagesLayer::from_pages(HashMap::new())
    }
}

impl<S> Layer<S> for ErrorPagesLayer {
    type Service = ErrorPages<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ErrorPages {
            inner,
            pages: self.pages.clone(),
        }
    }
}

/// The service produced by [`ErrorPagesLayer`].
#[derive(Debug, Clone)]
pub struct ErrorPages<S> {
    inner: S,
    pages: Arc<HashMap<StatusCode, Bytes>>,
}

/// Whether `text/html` is among the acceptable media types (and not refused with `q=0`).
fn accepts_html(accept: Option<&HeaderValue>) -> bool {
    let Some(accept) = accept.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        let refused = parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        });
        media.eq_ignore_ascii_case("text/html") && !refused
    })
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ErrorPages<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
{
    type Response = Response<Either<ResBody, Full<Bytes>>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let pages = (!self.pages.is_empty() && accepts_html(request.headers().get(header::ACCEPT)))
            .then(|| self.pages.clone());
        ResponseFuture {
            inner: self.inner.call(request),
            pages,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`ErrorPages`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        pages: Option<Arc<HashMap<StatusCode, Bytes>>>,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    ResBody: Body,
{
    type Output = Result<Response<Either<ResBody, Full<Bytes>>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        let page = this.pages.as_ref().and_then(|pages| {
            let status = response.status();
            let is_error = status.is_client_error() || status.is_server_error();
            let nothing_to_show = response.body().size_hint().exact() == Some(0)
                || response.extensions().get::<ServerGenerated>().is_some();
            (is_error && nothing_to_show)
                .then(|| pages.get(&status).cloned())
                .flatten()
        });
        let Some(page) = page else {
            return Poll::Ready(Ok(response.map(Either::Left)));
        };
        let (mut parts, _) = response.into_parts();
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.remove(header::CONTENT_ENCODING);
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        Poll::Ready(Ok(Response::from_parts(
            parts,
            Either::Right(Full::new(page)),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::convert::Infallible;
    use tower::{service_fn, ServiceExt};

    fn layer() -> ErrorPagesLayer {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("404.html"), "<h1>Not here</h1>").unwrap();
        std::fs::write(dir.path().join("503.html"), "<h1>Busy</h1>").unwrap();
        std::fs::write(dir.path().join("200.html"), "not an error").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        ErrorPagesLayer::from_dir(dir.path()).unwrap()
    }

    async fn call(
        accept: &str,
        status: u16,
        body: &'static str,
        generated: bool,
    ) -> (StatusCode, String, String) {
        let service = layer().layer(service_fn(move |_: Request<()>| async move {
            let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
            *response.status_mut() = StatusCode::from_u16(status).unwrap();
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            if generated {
                response.extensions_mut().insert(ServerGenerated);
            }
            Ok::<_, Infallible>(response)
        }));
        let request = Request::builder()
            .header(header::ACCEPT, accept)
            .body(())
            .unwrap();
        let response = service.oneshot(request).await.unwrap();
        let status = response.status();
        let content_type = response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    const BROWSER: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

    #[tokio::test]
    async fn browsers_get_the_page_for_empty_or_generated_errors() {
        let (status, content_type, body) = call(BROWSER, 404, "", false).await;
        assert_eq!(
            (status.as_u16(), content_type.as_str(), body.as_str()),
            (404, "text/html; charset=utf-8", "<h1>Not here</h1>")
        );
        let (status, _, body) = call(BROWSER, 503, "503 Service Unavailable\n", true).await;
        assert_eq!((status.as_u16(), body.as_str()), (503, "<h1>Busy</h1>"));
    }

    #[tokio::test]
    async fn everything_else_is_unchanged() {
        assert_eq!(
            call("application/json", 404, "", false).await.2,
            "",
            "API clients"
        );
        assert_eq!(call("*/*", 404, "", false).await.2, "", "curl");
        assert_eq!(
            call("text/html;q=0", 404, "", false).await.2,
            "",
            "refused html"
        );
        assert_eq!(
            call(BROWSER, 404, "PHP's own page", false).await.2,
            "PHP's own page"
        );
        assert_eq!(call(BROWSER, 500, "", false).await.2, "", "no page for 500");
        assert_eq!(call(BROWSER, 200, "", false).await.2, "", "not an error");
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        assert!(ErrorPagesLayer::from_dir("/nonexistent/tokio_php/errors").is_err());
    }
}
