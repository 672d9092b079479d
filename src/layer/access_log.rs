//! One `access` log line per request, written when the response body has been sent (so the byte
//! count and duration are real, for streamed responses too) or when the client went away.
//!
//! Fields (under `data`): `method`, `path`, `query`, `http_version`, `status`, `bytes`,
//! `duration_ms`, `client_ip`, `user_agent`, `referer`, `tls`, `completed` (false when the
//! client left before the body was sent, or the body broke off) and `error` (why the body broke
//! off, e.g. the script failed after its output started; empty otherwise). The line is logged inside the request's span, so its
//! `ctx` carries the request and trace ids of the layers outside this one.
//!
//! ```
//! use tokio_php::layer::AccessLogLayer;
//! use tower::ServiceBuilder;
//!
//! let service = ServiceBuilder::new()
//!     .layer(AccessLogLayer::new())
//!     .service_fn(|_: http::Request<()>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::<bytes::Bytes>::from("hi")))
//!     });
//! # drop(service);
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Buf;
use http::{header, Request, Response, Version};
use http_body::{Body, Frame, SizeHint};
use tower::{Layer, Service};

use crate::http::{protocol_name, ConnInfo};

/// Applies access logging to a service. See the [module docs](self).
#[derive(Debug, Clone, Copy)]
pub struct AccessLogLayer {
    enabled: bool,
}

impl AccessLogLayer {
    /// A new layer.
    pub fn new() -> Self {
        AccessLogLayer { enabled: true }
    }

    /// Logs nothing. The service keeps the same type as an enabled one, so a stack can switch
    /// this layer off without boxing.
    pub fn disabled() -> Self {
        AccessLogLayer { enabled: false }
    }
}

impl Default for AccessLogLayer {
    fn default() -> Self {
        AccessLogLayer::new()
    }
}

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessLog {
            inner,
            enabled: self.enabled,
        }
    }
}

/// The service produced by [`AccessLogLayer`].
#[derive(Debug, Clone)]
pub struct AccessLog<S> {
    inner: S,
    enabled: bool,
}

/// What is known of the request when it arrives.
#[derive(Debug)]
struct Entry {
    span: tracing::Span,
    started: Instant,
    method: String,
    path: String,
    query: String,
    version: Version,
    client_ip: String,
    peer_ip: String,
    user_agent: String,
    referer: String,
    tls: bool,
    status: u16,
    bytes: u64,
    /// The body length the response announced (Content-Length or an exact size).
    announced_len: Option<u64>,
    completed: bool,
    /// Why the body broke off.
    error: Option<String>,
}

impl Entry {
    fn new<B>(request: &Request<B>) -> Entry {
        let header = |name: header::HeaderName| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let conn = request.extensions().get::<ConnInfo>();
        Entry {
            span: tracing::Span::current(),
            started: Instant::now(),
            method: request.method().to_string(),
            path: request.uri().path().to_string(),
            query: request.uri().query().unwrap_or("").to_string(),
            version: request.version(),
            client_ip: conn.map_or(String::new(), |c| c.client_ip().to_string()),
            peer_ip: conn.map_or(String::new(), |c| c.remote_addr.ip().to_string()),
            user_agent: header(header::USER_AGENT),
            referer: header(header::REFERER),
            tls: conn.is_some_and(|c| c.tls.is_some()),
            status: 0,
            bytes: 0,
            announced_len: None,
            completed: false,
            error: None,
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        let duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(
            parent: &self.span,
            log_type = "access",
            method = %self.method,
            path = %self.path,
            query = %self.query,
            http_version = protocol_name(self.version),
            status = self.status,
            bytes = self.bytes,
            duration_ms = (duration_ms * 1000.0).round() / 1000.0,
            client_ip = %self.client_ip,
            peer_ip = %self.peer_ip,
            user_agent = %self.user_agent,
            referer = %self.referer,
            tls = self.tls,
            completed = self.completed,
            error = self.error.as_deref().unwrap_or(""),
            "{} {} {}",
            self.method,
            self.path,
            self.status
        );
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AccessLog<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
{
    type Response = Response<AccessLogBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let entry = self.enabled.then(|| Entry::new(&request));
        ResponseFuture {
            inner: self.inner.call(request),
            entry,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`AccessLog`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        entry: Option<Entry>,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    ResBody: Body,
{
    type Output = Result<Response<AccessLogBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        let (parts, body) = response.into_parts();
        let entry = this.entry.take().map(|mut entry| {
            entry.status = parts.status.as_u16();
            entry.announced_len = parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .or_else(|| body.size_hint().exact());
            entry.completed = body.is_end_stream();
            entry
        });
        let body = AccessLogBody { inner: body, entry };
        Poll::Ready(Ok(Response::from_parts(parts, body)))
    }
}

pin_project_lite::pin_project! {
    /// A response body that counts what it sends and logs the request's line when it ends (or is
    /// dropped early).
    pub struct AccessLogBody<B> {
        #[pin]
        inner: B,
        entry: Option<Entry>,
    }
}

impl<B> Body for AccessLogBody<B>
where
    B: Body,
    B::Error: std::fmt::Display,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = std::task::ready!(this.inner.as_mut().poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let (Some(entry), Some(data)) = (this.entry.as_mut(), frame.data_ref()) {
                    entry.bytes += data.remaining() as u64;
                }
                // hyper stops polling once the body says it has ended, or once it has sent as
                // many bytes as the body announced.
                let all_sent = this
                    .entry
                    .as_ref()
                    .is_some_and(|e| e.announced_len.is_some_and(|len| e.bytes >= len));
                if this.inner.is_end_stream() || all_sent {
                    if let Some(mut entry) = this.entry.take() {
                        entry.completed = true;
                    }
                }
            }
            Some(Err(error)) => {
                if let Some(mut entry) = this.entry.take() {
                    entry.error = Some(error.to_string()); // logs, not completed
                }
            }
            None => {
                if let Some(mut entry) = this.entry.take() {
                    entry.completed = true;
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};
    use tower::{service_fn, ServiceExt};
    use tracing_subscriber::prelude::*;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Capture {
        /// Captures this thread's JSON log lines until the guard is dropped.
        fn log_lines() -> (Self, tracing::subscriber::DefaultGuard) {
            let capture = Capture::default();
            let writer = capture.clone();
            let subscriber = tracing_subscriber::registry().with(
                crate::telemetry::log::JsonLayer::new("tokio_php", move || writer.clone()),
            );
            (capture, tracing::subscriber::set_default(subscriber))
        }
    }
    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn one_line_per_request_after_the_body_is_sent() {
        let (capture, _guard) = Capture::log_lines();

        let service = AccessLogLayer::new().layer(service_fn(|_: Request<()>| async {
            let mut response = Response::new(Full::new(Bytes::from_static(b"hello")));
            *response.status_mut() = http::StatusCode::CREATED;
            Ok::<_, Infallible>(response)
        }));
        let mut request = Request::get("/path?q=1")
            .header("user-agent", "test-agent")
            .header("referer", "http://ref/")
            .body(())
            .unwrap();
        request.extensions_mut().insert(ConnInfo::tcp(
            "127.0.0.1:80".parse().unwrap(),
            "10.1.2.3:5555".parse().unwrap(),
        ));
        let response = service.clone().oneshot(request).await.unwrap();
        assert!(
            capture.0.lock().unwrap().is_empty(),
            "nothing logged before the body is sent"
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"hello");

        // A client that leaves before reading the body still gets its line.
        let response = service.oneshot(Request::new(())).await.unwrap();
        drop(response);

        let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        let data = &lines[0]["data"];
        assert_eq!(lines[0]["type"], "access");
        assert_eq!(data["method"], "GET");
        assert_eq!(data["path"], "/path");
        assert_eq!(data["query"], "q=1");
        assert_eq!(data["http_version"], "HTTP/1.1");
        assert_eq!(data["status"], 201);
        assert_eq!(data["bytes"], 5);
        assert_eq!(data["client_ip"], "10.1.2.3");
        assert_eq!(data["user_agent"], "test-agent");
        assert_eq!(data["referer"], "http://ref/");
        assert_eq!(data["tls"], false);
        assert_eq!(data["completed"], true);
        assert!(data["duration_ms"].as_f64().unwrap() >= 0.0);
        assert_eq!(lines[1]["data"]["completed"], false);
    }

    /// Sends `part`, then fails.
    struct BreaksOff(Option<Bytes>);

    impl Body for BreaksOff {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            Poll::Ready(Some(match self.0.take() {
                Some(part) => Ok(Frame::data(part)),
                None => Err(std::io::Error::other("the script failed")),
            }))
        }
    }

    #[tokio::test]
    async fn a_body_that_breaks_off_is_logged_incomplete_with_its_error() {
        let (capture, _guard) = Capture::log_lines();

        let service = AccessLogLayer::new().layer(service_fn(|_: Request<()>| async {
            Ok::<_, Infallible>(Response::new(BreaksOff(Some(Bytes::from_static(b"part")))))
        }));
        let response = service.oneshot(Request::new(())).await.unwrap();
        assert!(response.into_body().collect().await.is_err());

        let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["data"]["bytes"], 4);
        assert_eq!(line["data"]["completed"], false);
        assert_eq!(line["data"]["error"], "the script failed");
    }
}
