//! The response future shared by layers that run the rest of a request inside a tracing span and
//! put one header on its response ([`PropagateTraceContextLayer`](super::PropagateTraceContextLayer),
//! [`SetRequestIdLayer`](super::SetRequestIdLayer)).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderName, HeaderValue, Response};
use tracing::instrument::Instrumented;
use tracing::Instrument;

pin_project_lite::pin_project! {
    /// Polls the inner future inside a tracing span, then sets one header on the response.
    pub struct SpanHeaderFuture<F> {
        #[pin]
        inner: Instrumented<F>,
        header: Option<(HeaderName, HeaderValue)>,
    }
}

impl<F> SpanHeaderFuture<F> {
    pub(crate) fn new(
        inner: F,
        span: tracing::Span,
        name: HeaderName,
        value: Option<HeaderValue>,
    ) -> Self {
        SpanHeaderFuture {
            inner: inner.instrument(span),
            header: value.map(|value| (name, value)),
        }
    }
}

impl<F, ResBody, E> Future for SpanHeaderFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = std::task::ready!(this.inner.poll(cx))?;
        if let Some((name, value)) = this.header.take() {
            response.headers_mut().insert(name, value);
        }
        Poll::Ready(Ok(response))
    }
}
