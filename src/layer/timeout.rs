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

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};
use tracing::Instrument;

type Interrupt = Box<dyn FnOnce() + Send>;

/// A request's deadline, shared between the timeout layer and the code running the request.
#[derive(Clone)]
pub struct Deadline {
    shared: Arc<DeadlineShared>,
}

struct DeadlineShared {
    origin: Instant,
    /// Milliseconds after `origin`.
    deadline_ms: AtomicU64,
    max_extension: Duration,
    interrupt: Mutex<InterruptState>,
    /// Signalled when the work behind the request finishes.
    work_finished: Notify,
    /// The work is still waiting for the request body from the client.
    receiving_body: AtomicBool,
}

#[derive(Default)]
struct InterruptState {
    expired: bool,
    on_expire: Option<Interrupt>,
}

impl fmt::Debug for Deadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deadline")
            .field("remaining", &self.remaining())
            .field("max_extension", &self.shared.max_extension)
            .finish()
    }
}

impl Deadline {
    /// A deadline `timeout` from now, which [`extend`](Self::extend) may move at most `timeout`
    /// ahead of the moment it is called.
    pub fn new(timeout: Duration) -> Deadline {
        Deadline {
            shared: Arc::new(DeadlineShared {
                origin: Instant::now(),
                deadline_ms: AtomicU64::new(millis(timeout)),
                max_extension: timeout,
                interrupt: Mutex::new(InterruptState::default()),
                work_finished: Notify::new(),
                receiving_body: AtomicBool::new(false),
            }),
        }
    }

    /// When the request times out (unless extended).
    pub fn instant(&self) -> Instant {
        self.shared.origin + Duration::from_millis(self.shared.deadline_ms.load(Ordering::Acquire))
    }

    /// Time left.
    pub fn remaining(&self) -> Duration {
        self.instant().saturating_duration_since(Instant::now())
    }

    /// The heartbeat: moves the deadline to `seconds` from now. False (and no change) when
    /// `seconds` is not in `1..=timeout` or the request already timed out.
    pub fn extend(&self, seconds: i64) -> bool {
        let Ok(seconds) = u64::try_from(seconds) else {
            return false;
        };
        let by = Duration::from_secs(seconds);
        if seconds == 0 || by > self.shared.max_extension || self.lock().expired {
            return false;
        }
        let target = millis(self.shared.origin.elapsed() + by);
        self.shared.deadline_ms.fetch_max(target, Ordering::AcqRel);
        true
    }

    /// Says whether the work is waiting for the request body: a deadline that passes meanwhile
    /// is the client's slowness, answered `408 Request Timeout` (and the connection closed)
    /// rather than `504`.
    pub fn receiving_body(&self, receiving: bool) {
        self.shared
            .receiving_body
            .store(receiving, Ordering::Release);
    }

    fn is_receiving_body(&self) -> bool {
        self.shared.receiving_body.load(Ordering::Acquire)
    }

    /// Registers how to stop the work behind this request when it times out. Runs `interrupt`
    /// at once if that already happened. Replaces an earlier registration.
    pub fn on_expire(&self, interrupt: impl FnOnce() + Send + 'static) {
        let mut state = self.lock();
        if state.expired {
            drop(state);
            interrupt();
        } else {
            state.on_expire = Some(Box::new(interrupt));
        }
    }

    /// Forgets the registered interrupt: the work finished, and the deadline no longer needs
    /// watching.
    pub fn clear_on_expire(&self) {
        self.lock().on_expire = None;
        self.shared.work_finished.notify_one();
    }

    /// Whether work registered with [`on_expire`](Self::on_expire) is still running.
    fn has_running_work(&self) -> bool {
        self.lock().on_expire.is_some()
    }

    /// Expires at the deadline (moved by heartbeats meanwhile) unless the work finishes first.
    async fn expire_unless_finished(self) {
        let finished = self.shared.work_finished.notified();
        let mut finished = std::pin::pin!(finished);
        loop {
            tokio::select! {
                () = &mut finished => return,
                () = tokio::time::sleep_until(self.instant()) => {
                    if self.instant() <= Instant::now() {
                        tracing::warn!(
                            "request timed out after its response head was sent; stopping it"
                        );
                        self.expire();
                        return;
                    }
                }
            }
        }
    }

    /// Whether the request timed out.
    pub fn is_expired(&self) -> bool {
        self.lock().expired
    }

    /// Marks the request timed out and runs the registered interrupt.
    fn expire(&self) {
        let interrupt = {
            let mut state = self.lock();
            state.expired = true;
            state.on_expire.take()
        };
        if let Some(interrupt) = interrupt {
            interrupt();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InterruptState> {
        self.shared
            .interrupt
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

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
    response.extensions_mut().insert(crate::ServerGenerated);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::sync::atomic::AtomicBool;
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

    #[tokio::test(start_paused = true)]
    async fn extensions_are_bounded() {
        let deadline = Deadline::new(Duration::from_secs(30));
        assert!(!deadline.extend(0));
        assert!(!deadline.extend(-5));
        assert!(!deadline.extend(31));
        assert!(deadline.extend(30));
        let far = deadline.instant();
        assert!(deadline.extend(1), "a shorter heartbeat is accepted");
        assert_eq!(deadline.instant(), far, "but never moves the deadline back");
        deadline.expire();
        assert!(!deadline.extend(10), "too late once expired");
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        deadline.on_expire(move || flag.store(true, Ordering::SeqCst));
        assert!(
            ran.load(Ordering::SeqCst),
            "registering after expiry interrupts at once"
        );
    }
}
