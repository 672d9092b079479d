//! Per-client-IP rate limiting with governor: `limit` requests per `window`.
//!
//! Clients are keyed by IP address ([`ConnInfo`]; IPv6 clients by their /64, since one host
//! usually owns a whole /64). The quota is a GCRA bucket holding `limit` requests that refills
//! one request every `window / limit`. Every response carries `X-RateLimit-Limit`,
//! `X-RateLimit-Remaining` and `X-RateLimit-Reset` (seconds until the bucket is full again);
//! over the limit the answer is `429 Too Many Requests` with `Retry-After` (seconds until the
//! next request is allowed). Clients not seen for a window are pruned, so memory stays bounded.
//! Requests without a [`ConnInfo`] are not limited.
//!
//! ```
//! use std::time::Duration;
//! use tokio_php::layer::RateLimitLayer;
//! use tower::ServiceBuilder;
//!
//! let service = ServiceBuilder::new()
//!     .layer(RateLimitLayer::new(100, Duration::from_secs(60)))
//!     .service_fn(|_: http::Request<()>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::<bytes::Bytes>::from("ok")))
//!     });
//! # drop(service);
//! ```

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use tower::{Layer, Service};

use crate::http::{plain_response, ConnInfo};

type Limiter =
    RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock, StateInformationMiddleware>;

const LIMIT: &str = "x-ratelimit-limit";
const REMAINING: &str = "x-ratelimit-remaining";
const RESET: &str = "x-ratelimit-reset";

/// Applies per-IP rate limiting. See the [module docs](self).
#[derive(Clone)]
pub struct RateLimitLayer {
    /// `None`: disabled, no request is limited.
    shared: Option<Arc<Shared>>,
}

struct Shared {
    limiter: Limiter,
    limit: u32,
    refill_every: Duration,
    window: Duration,
    started: Instant,
    last_prune_ms: AtomicU64,
}

impl fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("RateLimitLayer");
        match &self.shared {
            Some(shared) => debug
                .field("limit", &shared.limit)
                .field("window", &shared.window),
            None => debug.field("limit", &"off"),
        };
        debug.finish()
    }
}

impl RateLimitLayer {
    /// `limit` requests per `window` per client. Panics if `limit` or `window` is zero.
    pub fn new(limit: u32, window: Duration) -> Self {
        let burst = NonZeroU32::new(limit).expect("rate limit must be at least 1");
        assert!(!window.is_zero(), "rate window must be positive");
        let refill_every = (window / limit).max(Duration::from_nanos(1));
        let quota = Quota::with_period(refill_every)
            .expect("a positive period")
            .allow_burst(burst);
        RateLimitLayer {
            shared: Some(Arc::new(Shared {
                limiter: RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
                limit,
                refill_every,
                window,
                started: Instant::now(),
                last_prune_ms: AtomicU64::new(0),
            })),
        }
    }

    /// Limits nothing and adds no headers. The service keeps the same type as an enabled one,
    /// so a stack can switch this layer off without boxing.
    pub fn disabled() -> Self {
        RateLimitLayer { shared: None }
    }

    /// Clients currently tracked (for tests and metrics).
    pub fn tracked_clients(&self) -> usize {
        self.shared
            .as_ref()
            .map_or(0, |shared| shared.limiter.len())
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service produced by [`RateLimitLayer`].
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    shared: Option<Arc<Shared>>,
}

impl<S: fmt::Debug> fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .finish()
    }
}

/// The key for a client: its IPv4 address, or its IPv6 /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// What the limiter decided, as headers.
struct Decision {
    allowed: bool,
    remaining: u32,
    reset_secs: u64,
    retry_after_secs: u64,
}

impl Shared {
    fn decide(&self, ip: IpAddr) -> Decision {
        self.prune_if_due();
        match self.limiter.check_key(&client_key(ip)) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let missing = self.limit.saturating_sub(remaining);
                Decision {
                    allowed: true,
                    remaining,
                    reset_secs: ceil_secs(self.refill_every * missing),
                    retry_after_secs: 0,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Decision {
                    allowed: false,
                    remaining: 0,
                    reset_secs: ceil_secs(self.refill_every * self.limit),
                    retry_after_secs: ceil_secs(wait).max(1),
                }
            }
        }
    }

    /// Forgets clients whose bucket is full again, at most once per window.
    fn prune_if_due(&self) {
        let now_ms = self.started.elapsed().as_millis() as u64;
        let last = self.last_prune_ms.load(Ordering::Relaxed);
        let due = now_ms.saturating_sub(last) >= self.window.as_millis() as u64;
        if due
            && self
                .last_prune_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
    }
}

fn ceil_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<Either<ResBody, Full<Bytes>>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let limited_client = self
            .shared
            .as_ref()
            .zip(request.extensions().get::<ConnInfo>());
        let Some((shared, conn)) = limited_client else {
            let future = self.inner.call(request);
            return ResponseFuture {
                kind: Kind::Inner {
                    future,
                    headers: None,
                },
            };
        };
        let decision = shared.decide(conn.client_ip());
        let headers = shared.headers(&decision);
        if decision.allowed {
            let future = self.inner.call(request);
            return ResponseFuture {
                kind: Kind::Inner {
                    future,
                    headers: Some(headers),
                },
            };
        }
        tracing::info!(client_ip = %conn.client_ip(), "rate limit exceeded; answering 429");
        let mut response = plain_response(StatusCode::TOO_MANY_REQUESTS).map(Full::new);
        let response_headers = response.headers_mut();
        response_headers.extend(headers);
        response_headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from(decision.retry_after_secs),
        );
        ResponseFuture {
            kind: Kind::Limited {
                response: Some(response),
            },
        }
    }
}

impl Shared {
    fn headers(&self, decision: &Decision) -> http::HeaderMap {
        let mut headers = http::HeaderMap::with_capacity(3);
        headers.insert(LIMIT, HeaderValue::from(self.limit));
        headers.insert(REMAINING, HeaderValue::from(decision.remaining));
        headers.insert(RESET, HeaderValue::from(decision.reset_secs));
        headers
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`RateLimit`].
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        // The request went through; its response gets the rate-limit headers.
        Inner { #[pin] future: F, headers: Option<http::HeaderMap> },
        // The request was refused.
        Limited { response: Option<Response<Full<Bytes>>> },
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<Either<ResBody, Full<Bytes>>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future, headers } => {
                let mut response = std::task::ready!(future.poll(cx))?;
                if let Some(headers) = headers.take() {
                    response.headers_mut().extend(headers);
                }
                Poll::Ready(Ok(response.map(Either::Left)))
            }
            KindProj::Limited { response } => {
                let response = response.take().expect("polled after completion");
                Poll::Ready(Ok(response.map(Either::Right)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::convert::Infallible;
    use tower::{service_fn, ServiceExt};

    fn service(
        layer: &RateLimitLayer,
    ) -> impl Service<
        Request<()>,
        Response = Response<Either<Full<Bytes>, Full<Bytes>>>,
        Error = Infallible,
    > + Clone {
        layer.layer(service_fn(|_: Request<()>| async {
            Ok::<_, Infallible>(Response::new(Full::from("ok")))
        }))
    }

    fn from(ip: &str) -> Request<()> {
        let mut request = Request::new(());
        let remote = std::net::SocketAddr::new(ip.parse().unwrap(), 4000);
        request
            .extensions_mut()
            .insert(ConnInfo::tcp("127.0.0.1:80".parse().unwrap(), remote));
        request
    }

    fn header(response: &Response<impl Sized>, name: &str) -> String {
        response.headers()[name].to_str().unwrap().to_string()
    }

    #[tokio::test]
    async fn the_limit_applies_per_client_with_headers() {
        let layer = RateLimitLayer::new(3, Duration::from_secs(60));
        let svc = service(&layer);
        for remaining in ["2", "1", "0"] {
            let response = svc.clone().oneshot(from("10.0.0.1")).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(header(&response, LIMIT), "3");
            assert_eq!(header(&response, REMAINING), remaining);
        }
        let refused = svc.clone().oneshot(from("10.0.0.1")).await.unwrap();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(header(&refused, REMAINING), "0");
        let retry: u64 = header(&refused, "retry-after").parse().unwrap();
        assert!(
            (1..=20).contains(&retry),
            "one request refills every 20s: {retry}"
        );
        assert_eq!(header(&refused, RESET), "60");
        let body = refused.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"429 Too Many Requests\n");

        let other = svc.clone().oneshot(from("10.0.0.2")).await.unwrap();
        assert_eq!(
            other.status(),
            StatusCode::OK,
            "another client has its own budget"
        );
    }

    #[tokio::test]
    async fn ipv6_clients_share_their_slash_64() {
        let layer = RateLimitLayer::new(1, Duration::from_secs(60));
        let svc = service(&layer);
        assert_eq!(
            svc.clone()
                .oneshot(from("2001:db8:1:2::1"))
                .await
                .unwrap()
                .status(),
            StatusCode::OK
        );
        let same_64 = svc
            .clone()
            .oneshot(from("2001:db8:1:2:ffff::9"))
            .await
            .unwrap();
        assert_eq!(same_64.status(), StatusCode::TOO_MANY_REQUESTS);
        let other_64 = svc.oneshot(from("2001:db8:1:3::1")).await.unwrap();
        assert_eq!(other_64.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn stale_clients_are_pruned() {
        let layer = RateLimitLayer::new(5, Duration::from_millis(50));
        let svc = service(&layer);
        for i in 0..20 {
            svc.clone()
                .oneshot(from(&format!("10.0.1.{i}")))
                .await
                .unwrap();
        }
        assert!(layer.tracked_clients() >= 19);
        // The limiter runs on the real clock (governor's), not tokio's: a paused clock cannot
        // age the buckets. Each new request may prune, once a window has passed and the buckets
        // are full again; wait (bounded) for a request to have done so.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            svc.clone().oneshot(from("10.0.2.1")).await.unwrap();
            if layer.tracked_clients() <= 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} clients still tracked",
                layer.tracked_clients()
            );
            // The poll interval of the bounded wait above.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn requests_without_a_client_address_pass() {
        let svc = service(&RateLimitLayer::new(1, Duration::from_secs(60)));
        for _ in 0..3 {
            let response = svc.clone().oneshot(Request::new(())).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert!(response.headers().get(LIMIT).is_none());
        }
    }
}
