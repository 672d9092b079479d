//! The server without PHP: tokio_php's connection handling (HTTP/1.1 and h2c, limits, graceful
//! shutdown) and a few of its layers around [`StubService`], which answers every request with an
//! empty `200`. A baseline for load tests (what `USE_STUB=1` measures inside the real binary) and
//! a place to try a layer of your own without starting PHP.
//!
//! ```sh
//! cargo run --release --example stub_server
//! wrk -t2 -c50 -d5s http://127.0.0.1:8080/
//! ```

use std::time::Duration;

use tokio_php::layer::{
    AccessLogLayer, PropagateTraceContextLayer, SetRequestIdLayer, TimeoutLayer,
};
use tokio_php::server::{self, ServeConfig};
use tokio_php::StubService;
use tower::ServiceBuilder;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    tokio_php::telemetry::log::init(&filter, "stub_server")?;
    let addr = std::env::var("LISTEN_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:8080".into())
        .parse()?;
    let service = ServiceBuilder::new()
        .layer(PropagateTraceContextLayer::new())
        .layer(SetRequestIdLayer::new())
        .layer(AccessLogLayer::new())
        .layer(TimeoutLayer::new(Duration::from_secs(30)))
        .service(StubService);

    tokio::runtime::Runtime::new()?.block_on(async {
        let listener = server::bind(addr).await?;
        server::serve(
            listener,
            service,
            ServeConfig::default(),
            server::shutdown_signal(),
        )
        .await?;
        Ok(())
    })
}
