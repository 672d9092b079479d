//! [`StubService`]: empty `200 OK` responses without PHP, to measure the server alone.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::Service;

use crate::php::PhpBody;

/// Answers every request with an empty `200 OK` (`USE_STUB=1`).
///
/// ```
/// use tower::ServiceExt;
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let response = tokio_php::StubService
///     .oneshot(http::Request::new(()))
///     .await
///     .unwrap();
/// assert_eq!(response.status(), 200);
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct StubService;

impl<B> Service<Request<B>> for StubService {
    type Response = Response<PhpBody>;
    type Error = Infallible;
    type Future = Ready<Result<Response<PhpBody>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Request<B>) -> Self::Future {
        ready(Ok(Response::new(PhpBody::empty())))
    }
}
