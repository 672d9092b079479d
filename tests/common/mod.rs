//! Shared helpers for the integration tests: one real PHP runtime per test binary, servers on
//! ephemeral loopback ports, and real HTTP/1.1 and h2c clients.
#![allow(dead_code)]

pub mod mariadb;
pub mod process;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_php::php::{
    BodyLimits, DocumentRoot, PhpPool, PhpRuntime, PhpRuntimeConfig, PhpService, PhpServiceConfig,
    PoolConfig, PoolStats,
};
use tokio_php::server::{self, ServeConfig};

/// PHP starts once per process; every test shares it and starts its own pool.
pub fn php_runtime() -> &'static PhpRuntime {
    static RUNTIME: OnceLock<PhpRuntime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        PhpRuntime::start(PhpRuntimeConfig {
            // Fixtures may be younger than OPcache's default 2 s protection window.
            ini: vec![("opcache.file_update_protection".into(), "0".into())],
            ..PhpRuntimeConfig::default()
        })
        .expect("PHP starts")
    })
}

/// The layer stack over the fixtures with every optional layer off; tests switch on what they
/// exercise with struct update syntax.
pub fn stack_config() -> tokio_php::stack::StackConfig {
    tokio_php::stack::StackConfig {
        document_root: Some(DocumentRoot::new(fixtures_root()).unwrap()),
        request_timeout: None,
        rate_limit: None,
        static_cache_ttl: None,
        index_file: None,
        try_files: None,
        error_pages: None,
        profile: false,
        access_log: false,
        metrics: tokio_php::telemetry::Metrics::new(),
        otel: None,
    }
}

pub fn fixtures_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/www")
}

/// A running server with its own PHP pool.
pub struct TestServer {
    pub addr: SocketAddr,
    pub pool: PhpPool,
    stop: Option<oneshot::Sender<()>>,
}

impl TestServer {
    pub async fn start(pool: PoolConfig, body_limits: BodyLimits) -> TestServer {
        TestServer::serve(pool, |pool| {
            let config = PhpServiceConfig {
                body_limits,
                ..PhpServiceConfig::new(DocumentRoot::new(fixtures_root()).unwrap())
            };
            PhpService::new(pool, config)
        })
        .await
    }

    /// Serves whatever stack `make` builds around a pool.
    pub async fn serve<S, B>(pool: PoolConfig, make: impl FnOnce(&PhpPool) -> S) -> TestServer
    where
        S: tower::Service<
                Request<hyper::body::Incoming>,
                Response = Response<B>,
                Error = std::convert::Infallible,
            > + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<tokio_php::BoxError>,
    {
        TestServer::serve_with(pool, ServeConfig::default(), make).await
    }

    /// Like `serve`, with connection settings (TLS, limits).
    pub async fn serve_with<S, B>(
        pool: PoolConfig,
        serve_config: ServeConfig,
        make: impl FnOnce(&PhpPool) -> S,
    ) -> TestServer
    where
        S: tower::Service<
                Request<hyper::body::Incoming>,
                Response = Response<B>,
                Error = std::convert::Infallible,
            > + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<tokio_php::BoxError>,
    {
        php_runtime();
        let pool = PhpPool::start(pool).expect("pool starts");
        let service = make(&pool);
        let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(server::serve(listener, service, serve_config, async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            pool,
            stop: Some(stop),
        }
    }

    /// The plain PHP service over the fixtures, as `serve` callers usually want it.
    pub fn php_service(pool: &PhpPool) -> PhpService {
        PhpService::new(
            pool,
            PhpServiceConfig::new(DocumentRoot::new(fixtures_root()).unwrap()),
        )
    }

    pub async fn with_workers(workers: usize) -> TestServer {
        TestServer::start(
            PoolConfig {
                workers,
                ..PoolConfig::default()
            },
            BodyLimits::default(),
        )
        .await
    }

    /// Waits (bounded) until the pool reaches a state.
    pub async fn wait_for(&self, what: &str, condition: impl Fn(PoolStats) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition(self.pool.stats()) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:?}",
                self.pool.stats()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub async fn get(&self, proto: Proto, path: &str) -> Response<Bytes> {
        send(
            self.addr,
            proto,
            Request::get(path).body(Full::default()).unwrap(),
        )
        .await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Http1,
    H2c,
}

pub const BOTH: [Proto; 2] = [Proto::Http1, Proto::H2c];

/// Sends one request on a fresh connection and collects the whole response.
pub async fn send(
    addr: SocketAddr,
    proto: Proto,
    request: Request<Full<Bytes>>,
) -> Response<Bytes> {
    tokio::time::timeout(Duration::from_secs(30), send_inner(addr, proto, request))
        .await
        .expect("response within 30s")
}

async fn send_inner(
    addr: SocketAddr,
    proto: Proto,
    mut request: Request<Full<Bytes>>,
) -> Response<Bytes> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let io = TokioIo::new(stream);
    let response = match proto {
        Proto::Http1 => {
            if !request.headers().contains_key(http::header::HOST) {
                request
                    .headers_mut()
                    .insert(http::header::HOST, addr.to_string().parse().unwrap());
            }
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            sender.send_request(request).await.unwrap()
        }
        Proto::H2c => {
            let uri = format!("http://{addr}{}", request.uri().path_and_query().unwrap());
            *request.uri_mut() = uri.parse().unwrap();
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .unwrap();
            tokio::spawn(conn);
            sender.send_request(request).await.unwrap()
        }
    };
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Response::from_parts(parts, body)
}

/// Writes raw bytes on a fresh connection and reads until the server closes it (or 5 s pass).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}

/// The status code of a raw HTTP/1.x response.
pub fn raw_status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

pub fn json(response: &Response<Bytes>) -> serde_json::Value {
    serde_json::from_slice(response.body()).unwrap_or_else(|e| {
        panic!(
            "status {}: body is not JSON ({e}): {}",
            response.status(),
            String::from_utf8_lossy(response.body())
        )
    })
}

pub fn text(response: &Response<Bytes>) -> &str {
    std::str::from_utf8(response.body()).unwrap()
}
