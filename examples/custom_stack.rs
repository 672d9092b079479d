//! A stack of your own: tokio_php's public layers, plus a layer of yours (a bearer-token check),
//! around `PhpService`, served over HTTP/1.1 and h2c.
//!
//! ```sh
//! API_TOKEN=secret DOCUMENT_ROOT=www cargo run --example custom_stack
//! curl -H 'Authorization: Bearer secret' http://127.0.0.1:8080/
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use tokio_php::layer::{
    AccessLogLayer, CompressionLayer, PropagateTraceContextLayer, SetRequestIdLayer, TimeoutLayer,
    TryFilesLayer,
};
use tokio_php::server::{self, ServeConfig};
use tokio_php::{
    http::DocumentRoot,
    php::{PhpPool, PhpRuntime, PhpRuntimeConfig, PhpService, PhpServiceConfig, PoolConfig},
};
use tower::{Layer, Service, ServiceBuilder};

/// Refuses requests without `Authorization: Bearer <token>` with 401.
#[derive(Clone)]
struct BearerAuthLayer {
    expected: Arc<HeaderValue>,
}

impl BearerAuthLayer {
    fn new(token: &str) -> Self {
        let expected = HeaderValue::try_from(format!("Bearer {token}")).expect("a printable token");
        BearerAuthLayer {
            expected: Arc::new(expected),
        }
    }
}

impl<S> Layer<S> for BearerAuthLayer {
    type Service = BearerAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BearerAuth {
            inner,
            expected: self.expected.clone(),
        }
    }
}

#[derive(Clone)]
struct BearerAuth<S> {
    inner: S,
    expected: Arc<HeaderValue>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for BearerAuth<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>, Error = Infallible>,
    S::Future: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<Either<ResBody, Full<Bytes>>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        if request.headers().get(header::AUTHORIZATION) == Some(&*self.expected) {
            let future = self.inner.call(request);
            return Box::pin(async move { future.await.map(|r| r.map(Either::Left)) });
        }
        let mut response = Response::new(Either::Right(Full::from("401 Unauthorized\n")));
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        Box::pin(std::future::ready(Ok(response)))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tokio_php::telemetry::log::init("info", "custom_stack")?;
    let token = std::env::var("API_TOKEN").unwrap_or_else(|_| "secret".into());
    let root = DocumentRoot::new(std::env::var("DOCUMENT_ROOT").unwrap_or_else(|_| "www".into()))?;

    // PHP first, before any other thread exists; then its workers.
    let php = PhpRuntime::start(PhpRuntimeConfig::default())?;
    let pool = PhpPool::start(PoolConfig::default())?;
    let service = ServiceBuilder::new()
        .layer(PropagateTraceContextLayer::new())
        .layer(SetRequestIdLayer::new())
        .layer(AccessLogLayer::new())
        .layer(BearerAuthLayer::new(&token))
        .layer(CompressionLayer::new())
        .layer(TryFilesLayer::new(root.clone()))
        .layer(TimeoutLayer::new(Duration::from_secs(30)))
        .service(PhpService::new(&pool, PhpServiceConfig::new(root)));

    tokio::runtime::Runtime::new()?.block_on(async {
        let listener = server::bind("127.0.0.1:8080".parse()?).await?;
        server::serve(
            listener,
            service,
            ServeConfig::default(),
            server::shutdown_signal(),
        )
        .await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    pool.shutdown(Duration::from_secs(30));
    php.shutdown();
    Ok(())
}
