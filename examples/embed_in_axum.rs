//! tokio_php inside an existing axum application: `PhpService` mounted under `/php`, every other
//! path answered by axum's own routes, one listener and one runtime for both.
//!
//! ```sh
//! DOCUMENT_ROOT=www cargo run --example embed_in_axum
//! curl http://127.0.0.1:8080/              # axum
//! curl http://127.0.0.1:8080/php/hello.php # PHP runs www/hello.php
//! ```
//!
//! `nest_service` strips the `/php` prefix before PHP sees the request, so `/php/hello.php` runs
//! `DOCUMENT_ROOT/hello.php` with `SCRIPT_NAME=/hello.php`. The client's address reaches PHP's
//! `REMOTE_ADDR` through [`ConnInfo`], made from axum's `ConnectInfo`.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::routing::get;
use axum::Router;
use tokio_php::layer::TimeoutLayer;
use tokio_php::ConnInfo;
use tokio_php::{
    http::DocumentRoot,
    php::{PhpPool, PhpRuntime, PhpRuntimeConfig, PhpService, PhpServiceConfig, PoolConfig},
};
use tower::ServiceBuilder;

/// What PhpService reads the client's and the server's addresses from.
fn with_conn_info(local_addr: SocketAddr) -> impl Fn(Request) -> Request + Clone {
    move |mut request: Request| {
        if let Some(&ConnectInfo(remote_addr)) =
            request.extensions().get::<ConnectInfo<SocketAddr>>()
        {
            request
                .extensions_mut()
                .insert(ConnInfo::tcp(local_addr, remote_addr));
        }
        request
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    tokio_php::telemetry::log::init(&filter, "embed_in_axum")?;
    let root = DocumentRoot::new(std::env::var("DOCUMENT_ROOT").unwrap_or_else(|_| "www".into()))?;
    let addr: SocketAddr = std::env::var("LISTEN_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:8080".into())
        .parse()?;

    // PHP first, before any other thread exists; then its workers.
    let php = PhpRuntime::start(PhpRuntimeConfig::default())?;
    let pool = PhpPool::start(PoolConfig::default())?;

    tokio::runtime::Runtime::new()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let php_service = ServiceBuilder::new()
            .map_request(with_conn_info(local_addr))
            .layer(TimeoutLayer::new(Duration::from_secs(30)))
            .service(PhpService::new(&pool, PhpServiceConfig::new(root)));
        let app = Router::new()
            .route(
                "/",
                get(|| async { "Hello from axum; PHP answers under /php/\n" }),
            )
            .nest_service("/php", php_service);

        tracing::info!(server = "http", %local_addr, tls = false, "listening");
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(tokio_php::server::shutdown_signal())
        .await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    pool.shutdown(Duration::from_secs(30));
    php.shutdown();
    Ok(())
}
