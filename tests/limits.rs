//! Connection hygiene: oversized or too many headers, slow and idle clients — each refused or
//! closed, and the server still serving the next client.

mod common;

use std::time::{Duration, Instant};

use common::{raw_exchange, raw_status, Proto, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_php::php::PoolConfig;
use tokio_php::server::ServeConfig;

async fn server() -> TestServer {
    let serve_config = ServeConfig {
        header_read_timeout: Duration::from_millis(500),
        max_header_size: 16 * 1024,
        max_headers: 20,
        keep_alive_timeout: Duration::from_millis(500),
        ..ServeConfig::default()
    };
    let pool = PoolConfig {
        workers: 1,
        ..PoolConfig::default()
    };
    TestServer::serve_with(pool, serve_config, TestServer::php_service).await
}

async fn still_serving(server: &TestServer) {
    assert_eq!(server.get(Proto::Http1, "/index.php").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_header_sections_get_431() {
    let server = server().await;
    let big = "x".repeat(32 * 1024);
    let request = format!("GET /index.php HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n");
    let response = raw_exchange(server.addr, request.as_bytes()).await;
    assert_eq!(
        raw_status(&response),
        431,
        "{}",
        &response[..response.len().min(200)]
    );
    still_serving(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_header_fields_get_431() {
    let server = server().await;
    let headers: String = (0..50).map(|i| format!("X-H{i}: v\r\n")).collect();
    let request = format!("GET /index.php HTTP/1.1\r\nHost: t\r\n{headers}\r\n");
    let response = raw_exchange(server.addr, request.as_bytes()).await;
    assert_eq!(raw_status(&response), 431);
    still_serving(&server).await;
}

/// Reads until the server closes the connection (bounded), returning what arrived and when.
async fn until_closed(stream: &mut TcpStream) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut received)).await;
    (received, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_client_is_cut_off() {
    let server = server().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /index.php HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        .await
        .unwrap();
    let (_, waited) = until_closed(&mut stream).await;
    assert!(
        waited < Duration::from_secs(10),
        "closed by the header read timeout"
    );
    still_serving(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed() {
    let server = server().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /index.php HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let (received, waited) = until_closed(&mut stream).await;
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.ends_with("index of /index.php"),
        "the response came whole first"
    );
    assert!(
        waited < Duration::from_secs(10),
        "then the idle connection was closed"
    );
    still_serving(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_get_goaway_and_close() {
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let server = server().await;
    let io = TokioIo::new(TcpStream::connect(server.addr).await.unwrap());
    let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let request = http::Request::get(format!("http://{}/index.php", server.addr))
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    assert_eq!(sender.send_request(request).await.unwrap().status(), 200);
    // Nothing more is sent: after the keep-alive timeout the server says GOAWAY and closes.
    let closed = tokio::time::timeout(Duration::from_secs(10), connection).await;
    assert!(
        closed.is_ok(),
        "the idle HTTP/2 connection was closed by the server"
    );
    still_serving(&server).await;
}
