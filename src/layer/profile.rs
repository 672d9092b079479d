//! Per-request timing headers, on demand: a request with `X-Profile: 1` gets
//!
//! | header | what |
//! |---|---|
//! | `X-Profile-Total-Us` | from this layer receiving the request to the response head |
//! | `X-Profile-HTTP-Version` | the request's protocol |
//! | `X-Profile-Parse-Us` | resolving the script, reading the body, preparing PHP's request |
//! | `X-Profile-Queue-Us` | waiting for a PHP worker |
//! | `X-Profile-PHP-Startup-Us` | `php_request_startup()` |
//! | `X-Profile-Script-Us` | running the script |
//! | `X-Profile-Output-Us` | handing output to the client |
//! | `X-Profile-PHP-Shutdown-Us` | `php_request_shutdown()` (absent for streamed responses) |
//! | `X-Profile-TLS-Handshake-Us` | the connection's TLS handshake (TLS only) |
//! | `X-Profile-TLS-Protocol` | `TLSv1_3` / `TLSv1_2` (TLS only) |
//! | `X-Profile-TLS-ALPN` | `h2` / `http/1.1` (TLS with ALPN only) |
//!
//! The PHP timings are measured where they happen ([`PhpTimings`]); responses that did not come
//! from PHP (static files, refusals) carry only the first two. The server adds this layer only
//! with `PROFILE=1`; without it the header is ignored and costs nothing.
//!
//! ```
//! use tokio_php::layer::ProfileLayer;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let service = ServiceBuilder::new()
//!     .layer(ProfileLayer::new())
//!     .service_fn(|_: http::Request<()>| async { Ok::<_, std::convert::Infallible>(http::Response::new(())) });
//! let request = http::Request::builder().header("x-profile", "1").body(()).unwrap();
//! let response = service.oneshot(request).await.unwrap();
//! assert!(response.headers().contains_key("x-profile-total-us"));
//! # }
//! ```
//!
//! [`PhpTimings`]: crate::http::PhpTimings

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, Request, Response, Version};
use tower::{Layer, Service};

use crate::http::{protocol_name, ConnInfo, PhpTimings, TlsInfo};

/// Adds `X-Profile-*` headers when asked. See the [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProfileLayer {
    _private: (),
}

impl ProfileLayer {
    /// A new layer.
    pub fn new() -> Self {
        ProfileLayer { _private: () }
    }
}

impl<S> Layer<S> for ProfileLayer {
    type Service = Profile<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Profile { inner }
    }
}

/// The service produced by [`ProfileLayer`].
#[derive(Debug, Clone)]
pub struct Profile<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Profile<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let wanted = request
            .headers()
            .get("x-profile")
            .is_some_and(|v| v.as_bytes() == b"1");
        let started = wanted.then(|| Asked {
            at: Instant::now(),
            version: request.version(),
            tls: request.extensions().get::<ConnInfo>().and_then(|c| c.tls),
        });
        ResponseFuture {
            inner: self.inner.call(request),
            started,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Profile`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        started: Option<Asked>,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = std::task::ready!(this.inner.poll(cx))?;
        if let Some(asked) = this.started.take() {
            let timings = response.extensions().get::<PhpTimings>().copied();
            add_headers(response.headers_mut(), &asked, timings);
        }
        Poll::Ready(Ok(response))
    }
}

/// A request that asked for a profile.
#[derive(Debug)]
struct Asked {
    at: Instant,
    version: Version,
    tls: Option<TlsInfo>,
}

fn add_headers(headers: &mut HeaderMap, asked: &Asked, timings: Option<PhpTimings>) {
    let micros = |d: Duration| HeaderValue::from(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    headers.insert("x-profile-total-us", micros(asked.at.elapsed()));
    headers.insert(
        "x-profile-http-version",
        HeaderValue::from_static(protocol_name(asked.version)),
    );
    if let Some(tls) = &asked.tls {
        headers.insert("x-profile-tls-handshake-us", micros(tls.handshake));
        headers.insert(
            "x-profile-tls-protocol",
            HeaderValue::from_static(tls.protocol),
        );
        if let Some(alpn) = tls.alpn {
            headers.insert("x-profile-tls-alpn", HeaderValue::from_static(alpn));
        }
    }
    let Some(t) = timings else { return };
    headers.insert("x-profile-parse-us", micros(t.parse));
    headers.insert("x-profile-queue-us", micros(t.queue));
    headers.insert("x-profile-php-startup-us", micros(t.startup));
    headers.insert("x-profile-script-us", micros(t.script));
    headers.insert("x-profile-output-us", micros(t.output));
    if let Some(shutdown) = t.shutdown {
        headers.insert("x-profile-php-shutdown-us", micros(shutdown));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{service_fn, ServiceExt};

    fn service() -> Profile<
        impl Service<Request<()>, Response = Response<()>, Error = Infallible, Future = impl Send>
            + Clone,
    > {
        ProfileLayer::new().layer(service_fn(|_: Request<()>| async {
            let mut response = Response::new(());
            response.extensions_mut().insert(PhpTimings {
                parse: Duration::from_micros(11),
                queue: Duration::from_micros(22),
                startup: Duration::from_micros(33),
                script: Duration::from_micros(44),
                output: Duration::from_micros(5),
                shutdown: Some(Duration::from_micros(66)),
            });
            Ok::<_, Infallible>(response)
        }))
    }

    #[tokio::test]
    async fn asked_for_profiles_carry_every_timing() {
        let request = Request::builder()
            .header("x-profile", "1")
            .body(())
            .unwrap();
        let response = service().oneshot(request).await.unwrap();
        let h = |name: &str| response.headers()[name].to_str().unwrap().to_string();
        assert_eq!(h("x-profile-http-version"), "HTTP/1.1");
        assert_eq!(h("x-profile-parse-us"), "11");
        assert_eq!(h("x-profile-queue-us"), "22");
        assert_eq!(h("x-profile-php-startup-us"), "33");
        assert_eq!(h("x-profile-script-us"), "44");
        assert_eq!(h("x-profile-output-us"), "5");
        assert_eq!(h("x-profile-php-shutdown-us"), "66");
        assert!(h("x-profile-total-us").parse::<u64>().is_ok());
    }

    #[tokio::test]
    async fn without_the_header_nothing_is_added() {
        for value in [None, Some("0"), Some("yes")] {
            let mut request = Request::new(());
            if let Some(value) = value {
                request
                    .headers_mut()
                    .insert("x-profile", HeaderValue::from_static(value));
            }
            let response = service().oneshot(request).await.unwrap();
            assert!(response.headers().is_empty(), "{value:?}");
        }
    }
}
