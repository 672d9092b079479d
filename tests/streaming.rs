//! Streaming responses: flush() delivers early, and clients that leave or stop reading free
//! their PHP worker.

mod common;

use std::time::{Duration, Instant};

use common::{Proto, TestServer, BOTH};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_php::{http::BodyLimits, php::PoolConfig};

type StreamingResponse = http::Response<hyper::body::Incoming>;

/// Opens a connection and returns the response as soon as its head arrives (the body still
/// streaming), plus the task driving the connection.
async fn open(
    addr: std::net::SocketAddr,
    proto: Proto,
    path: &str,
) -> (StreamingResponse, tokio::task::JoinHandle<()>) {
    open_with(addr, proto, path, &[]).await
}

/// [`open`] with request headers.
async fn open_with(
    addr: std::net::SocketAddr,
    proto: Proto,
    path: &str,
    headers: &[(&str, &str)],
) -> (StreamingResponse, tokio::task::JoinHandle<()>) {
    let with_headers = |mut request: http::request::Builder| {
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request
    };
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    match proto {
        Proto::Http1 => {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            let driver = tokio::spawn(async move {
                let _ = conn.await;
            });
            let request = with_headers(Request::get(path))
                .header("host", addr.to_string())
                .body(Empty::<bytes::Bytes>::new())
                .unwrap();
            (sender.send_request(request).await.unwrap(), driver)
        }
        Proto::H2c => {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .unwrap();
            let driver = tokio::spawn(async move {
                let _ = conn.await;
            });
            let request = with_headers(Request::get(format!("http://{addr}{path}")))
                .body(Empty::<bytes::Bytes>::new())
                .unwrap();
            (sender.send_request(request).await.unwrap(), driver)
        }
    }
}

/// Reads `response`'s body: its first frame must be `first`, arriving while the script waits for
/// the `signal` file (`what` says why it must); then the test creates the file, and the rest of
/// the body must be `rest`.
async fn first_part_arrives_before_the_signal(
    proto: Proto,
    response: StreamingResponse,
    signal: std::path::PathBuf,
    (first, rest): (&[u8], &[u8]),
    what: &str,
) {
    let mut body = response.into_body();
    let received = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&received[..], first, "{proto:?}: {what}");
    // Only now does the script learn it may finish.
    std::fs::write(signal, b"").unwrap();
    let received = body.collect().await.unwrap().to_bytes();
    assert_eq!(&received[..], rest, "{proto:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_sends_headers_and_output_before_the_script_ends() {
    let server = TestServer::with_workers(1).await;
    for proto in BOTH {
        let token = format!("{}{:?}", std::process::id(), proto).to_lowercase();
        let (response, _driver) =
            open(server.addr, proto, &format!("/flush.php?token={token}")).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["x-flushed"], "yes");
        first_part_arrives_before_the_signal(
            proto,
            response,
            std::env::temp_dir().join(format!("tokio_php_flush_{token}")),
            (b"first;", b"second"),
            "the flushed part arrives while the script waits",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_stream_frees_its_worker() {
    let server = TestServer::with_workers(1).await;
    for proto in BOTH {
        let (response, driver) = open(server.addr, proto, "/stream.php").await;
        let mut body = response.into_body();
        body.frame().await.unwrap().unwrap();
        drop(body);
        driver.abort(); // closes the connection
                        // The script would stream for ~20 s; it must stop as soon as it writes to the gone client.
        server
            .wait_for("the script to stop after the client left", |s| {
                s.busy_workers == 0
            })
            .await;
        let response = server.get(proto, "/index.php").await;
        assert_eq!(response.status(), StatusCode::OK);
    }
}

/// With no temp-file spool (or its budget used up), a worker whose client is the memory buffer
/// behind waits for it — up to the write timeout, then the client is given up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_spool_a_client_that_stops_reading_is_dropped_after_the_write_timeout() {
    let server = TestServer::start(
        PoolConfig {
            workers: 1,
            output_spool_limit: 0,
            write_timeout: Duration::from_millis(500),
            ..PoolConfig::default()
        },
        BodyLimits::default(),
    )
    .await;
    // A raw connection that reads a little and then nothing, while staying open.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /flood.php HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).await.unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"));
    server
        .wait_for("the worker to give up on the stalled client", |s| {
            s.busy_workers == 0
        })
        .await;
    assert_eq!(
        server.get(Proto::Http1, "/index.php").await.status(),
        StatusCode::OK
    );
    // When the client reads again, what was on its way arrives and then the connection closes,
    // without the terminal chunk: the response is visibly incomplete.
    let mut tail = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    tail.extend_from_slice(&buf[..n]);
                    tail.drain(..tail.len().saturating_sub(16));
                }
            }
        }
    })
    .await
    .is_ok();
    assert!(
        closed,
        "the server closes the connection of a client it gave up on"
    );
    assert!(
        !tail.ends_with(b"0\r\n\r\n"),
        "no terminal chunk on a response broken off: {:?}",
        String::from_utf8_lossy(&tail)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_arrive_in_order_as_the_script_sleeps() {
    let server = TestServer::with_workers(1).await;
    for proto in BOTH {
        let (response, _driver) = open(server.addr, proto, "/events.php").await;
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        let mut body = response.into_body();
        let mut events = Vec::new();
        let mut buffered = String::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.unwrap().into_data() else {
                continue;
            };
            buffered.push_str(std::str::from_utf8(&data).unwrap());
            while let Some(end) = buffered.find("\n\n") {
                let event: String = buffered.drain(..end + 2).collect();
                events.push((event, Instant::now()));
            }
        }
        let ids: Vec<_> = events
            .iter()
            .map(|(e, _)| e.lines().next().unwrap().to_string())
            .collect();
        assert_eq!(ids, ["id: 1", "id: 2", "id: 3"], "{proto:?}");
        for pair in events.windows(2) {
            let gap = pair[1].1 - pair[0].1;
            // The script sleeps 300 ms between events: each must arrive on its own, not batched.
            assert!(
                gap >= Duration::from_millis(100),
                "{proto:?}: events {gap:?} apart"
            );
        }
    }
}

/// The whole stack (compression included) over the fixtures, one worker.
async fn stack_server() -> TestServer {
    TestServer::with_stack(1, common::stack_config()).await
}

/// The compression layer must not hold back what PHP flushed: flush.php's output is text/html
/// (compressible) and the client accepts brotli, yet the flushed part arrives as written while
/// the script still waits — an encoder that buffered it, or compressed it, fails this.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_html_passes_the_compression_layer_as_written_before_the_script_ends() {
    let server = stack_server().await;
    let accepts_br = [("accept-encoding", "br")];
    for proto in BOTH {
        let token = format!("z{}{:?}", std::process::id(), proto).to_lowercase();
        let path = format!("/flush.php?token={token}");
        let (response, _driver) = open_with(server.addr, proto, &path, &accepts_br).await;
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(
            content_type.starts_with("text/html"),
            "{proto:?}: a compressible type: {content_type}"
        );
        assert!(
            !response.headers().contains_key("content-encoding"),
            "{proto:?}: flushed output is not compressed"
        );
        first_part_arrives_before_the_signal(
            proto,
            response,
            std::env::temp_dir().join(format!("tokio_php_flush_{token}")),
            (b"first;", b"second"),
            "the flushed part arrives as written while the script waits",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_request_gets_events_unbuffered_and_uncompressed() {
    let server = stack_server().await;
    let sse = [("accept", "text/event-stream"), ("accept-encoding", "br")];
    for proto in BOTH {
        let token = format!("{}{:?}", std::process::id(), proto).to_lowercase();
        let path = format!("/sse_by_accept.php?token={token}");
        let (response, _driver) = open_with(server.addr, proto, &path, &sse).await;
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{proto:?}: {content_type}"
        );
        assert!(
            !response.headers().contains_key("content-encoding"),
            "{proto:?}: events are never compressed"
        );
        first_part_arrives_before_the_signal(
            proto,
            response,
            std::env::temp_dir().join(format!("tokio_php_sse_{token}")),
            (b"data: first\n\n", b"data: second\n\n"),
            "the first event arrives without flush() while the script waits",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_s_own_content_type_wins_over_an_event_stream_accept() {
    let server = stack_server().await;
    let token = format!("{}json", std::process::id());
    std::fs::write(
        std::env::temp_dir().join(format!("tokio_php_sse_{token}")),
        b"",
    )
    .unwrap();
    let sse = [("accept", "text/event-stream")];
    let path = format!("/sse_by_accept.php?json=1&token={token}");
    let (response, _driver) = open_with(server.addr, Proto::Http1, &path, &sse).await;
    assert_eq!(response.headers()["content-type"], "application/json");
    // Without the Accept header, PHP's own default stays.
    let (response, _driver) = open(server.addr, Proto::Http1, "/index.php").await;
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=UTF-8"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_user_abort_scripts_run_on_and_see_the_abort() {
    let server = TestServer::with_workers(1).await;
    for proto in BOTH {
        let token = format!("a{}{:?}", std::process::id(), proto).to_lowercase();
        let marker = std::env::temp_dir().join(format!("tokio_php_abort_{token}"));
        let _ = std::fs::remove_file(&marker);
        let (response, driver) =
            open(server.addr, proto, &format!("/abort.php?token={token}")).await;
        let mut body = response.into_body();
        body.frame().await.unwrap().unwrap();
        drop(body);
        driver.abort();
        server
            .wait_for("the script to finish", |s| s.busy_workers == 0)
            .await;
        let result: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&marker).unwrap()).unwrap();
        assert_eq!(result["loops"], 100, "{proto:?}: the script ran to its end");
        assert_eq!(
            result["aborted"], 1,
            "{proto:?}: connection_aborted() saw the client leave"
        );
        std::fs::remove_file(&marker).unwrap();
    }
}
