//! A request timeout that PHP can extend: `504 Gateway Timeout` when the deadline passes, and the
//! PHP script really stopped.
//!
//! The layer puts a [`Deadline`] in the request extensions. [`PhpService`] hands it to the worker
//! running the script, which registers how to interrupt that script and answers
//! `tokio_request_heartbeat($seconds)` by moving the deadline to `$seconds` from now (at most the
//! configured timeout; the deadline never moves backwards). When the deadline passes, the layer
//! answers 504 with an empty body and fires the interrupt: the script ends at its next opcode
//! (a blocking `sleep()` is woken), and its worker is free for the next request.
//!
//! A response can come back while the work behind it still runs: a streamed PHP response leaves
//! with its first chunk or `flush()`. Then the deadline keeps running in a task of its own until
//! the work ends (it calls [`Deadline::clear_on_expire`]); if the deadline passes first, the work
//! is interrupted all the same, and the PHP body breaks off (an HTTP/1.1 connection closed without
//! its last chunk, an HTTP/2 stream reset) instead of ending as if complete.
//!
//! Re-arming is lazy: when the timer fires, the layer re-reads the deadline and sleeps again if a
//! heartbeat moved it, so a heartbeat costs one atomic operation and no wake-up.
//!
//! [`PhpService`]: crate::php::PhpService
//!
//! ```
//! use std::time::Duration;
//! use tokio_php::layer::TimeoutLayer;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let service = ServiceBuilder::new()
//!     .layer(TimeoutLayer::new(Duration::from_millis(10)))
//!     .service_fn(|_: http::Request<()>| async {
//!         tokio::time::sleep(Duration::from_secs(5)).await;
//!         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
//!     });
//! let response = service.oneshot(http::Request::new(())).await.unwrap();
//! assert_eq!(response.status(), 504);
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};
use tracing::Instrument;

use crate::http::Deadline;

/// Applies a heartbeat-extendable timeout. See the [module docs](self).
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    timeout: Duration,
}

impl TimeoutLayer {
    /// Requests get `timeout` (extendable by heartbeats, each by at most `timeout`).
    pub fn new(timeout: Duration) -> Self {
        TimeoutLayer { timeout }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout {
            inner,
            timeout: self.timeout,
        }
    }
}

/// The service produced by [`TimeoutLayer`].
#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Timeout<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let deadline = Deadline::new(self.timeout);
        request.extensions_mut().insert(deadline.clone());
        ResponseFuture {
            inner: self.inner.call(request),
            sleep: tokio::time::sleep_until(deadline.instant()),
            deadline,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Timeout`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Sleep,
        deadline: Deadline,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    ResBody: Default,
{
    type Output = Result<Response<ResBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            if this.deadline.has_running_work() {
                // A streamed response: its work runs on, and the deadline still applies to it.
                let watch = this.deadline.clone().expire_unless_finished();
                tokio::spawn(watch.instrument(tracing::Span::current()));
            }
            return Poll::Ready(result);
        }
        loop {
            std::task::ready!(this.sleep.as_mut().poll(cx));
            let deadline = this.deadline.instant();
            if deadline > Instant::now() {
                this.sleep.as_mut().reset(deadline); // a heartbeat moved it
                continue;
            }
            this.deadline.expire();
            return Poll::Ready(Ok(timed_out(this.deadline.is_receiving_body())));
        }
    }
}

/// The answer at the deadline: `408` while the client still owed the request body, else `504`.
fn timed_out<B: Default>(client_was_sending: bool) -> Response<B> {
    let mut response = Response::new(B::default());
    if client_was_sending {
        tracing::warn!("request body not received before the timeout; answering 408");
        *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
        // The rest of the body may still arrive; it cannot be told from a next request.
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    } else {
        tracing::warn!("request timed out; answering 504");
        *response.status_mut() = StatusCode::GATEWAY_TIMEOUT;
    }
    response
        .extensions_mut()
        .insert(crate::http::ServerGenerated);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use tower::{service_fn, ServiceExt};

    #[tokio::test(start_paused = true)]
    async fn slow_requests_get_504_and_their_work_is_interrupted() {
        let interrupted = Arc::new(AtomicBool::new(false));
        let flag = interrupted.clone();
        let service = TimeoutLayer::new(Duration::from_secs(2)).layer(service_fn(
            move |request: Request<()>| {
                let flag = flag.clone();
                async move {
                    let deadline = request.extensions().get::<Deadline>().unwrap().clone();
                    deadline.on_expire(move || flag.store(true, Ordering::SeqCst));
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok::<_, Infallible>(Response::new(String::from("late")))
                }
            },
        ));
        let response = service.oneshot(Request::new(())).await.unwrap();
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(response.body().is_empty());
        assert!(interrupted.load(Ordering::SeqCst));
    }

    /// A service whose response leaves at once while its work goes on for `work`, interruptible
    /// through the deadline; `interrupted` tells whether the deadline stopped it.
    fn streaming_service(
        work: Duration,
        interrupted: Arc<AtomicBool>,
    ) -> impl Service<
        Request<()>,
        Response = Response<String>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<String>, Infallible>>,
    > + Clone {
        service_fn(move |request: Request<()>| {
            let deadline = request.extensions().get::<Deadline>().unwrap().clone();
            let flag = interrupted.clone();
            deadline.on_expire(move || flag.store(true, Ordering::SeqCst));
            tokio::spawn(async move {
                tokio::time::sleep(work).await;
                deadline.clear_on_expire();
            });
            async { Ok::<_, Infallible>(Response::new(String::from("head sent, body streaming"))) }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_still_stops_work_that_outlives_its_response_head() {
        let interrupted = Arc::new(AtomicBool::new(false));
        let service = TimeoutLayer::new(Duration::from_secs(2)).layer(streaming_service(
            Duration::from_secs(60),
            interrupted.clone(),
        ));
        let response = service.oneshot(Request::new(())).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(1900)).await;
        assert!(
            !interrupted.load(Ordering::SeqCst),
            "not before the deadline"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(interrupted.load(Ordering::SeqCst), "at the deadline");
    }

    #[tokio::test(start_paused = true)]
    async fn work_that_finishes_after_its_head_in_time_is_left_alone() {
        let interrupted = Arc::new(AtomicBool::new(false));
        let service = TimeoutLayer::new(Duration::from_secs(2)).layer(streaming_service(
            Duration::from_secs(1),
            interrupted.clone(),
        ));
        service.oneshot(Request::new(())).await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!interrupted.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn fast_requests_pass() {
        let service =
            TimeoutLayer::new(Duration::from_secs(2)).layer(service_fn(|_: Request<()>| async {
                Ok::<_, Infallible>(Response::new(String::from("ok")))
            }));
        let response = service.oneshot(Request::new(())).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_move_the_deadline() {
        let service = TimeoutLayer::new(Duration::from_secs(2)).layer(service_fn(
            |request: Request<()>| async move {
                let deadline = request.extensions().get::<Deadline>().unwrap().clone();
                for _ in 0..3 {
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    assert!(deadline.extend(2));
                }
                Ok::<_, Infallible>(Response::new(String::from("done after 4.5s")))
            },
        ));
        let response = service.oneshot(Request::new(())).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}
