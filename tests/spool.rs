//! Slow clients do not hold PHP workers: output a client has not read waits in a spool (memory,
//! then an unlinked temporary file) so the script finishes at once, and the connection drains it
//! at the client's pace — every byte, in order — or gives the client up after the write timeout.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{read_h2_body, H2Client, Proto, TestServer};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;
use tokio_php::{http::BodyLimits, php::PoolConfig};

/// The tests count the process's temporary files, so they run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn server(workers: usize, write_timeout: Duration) -> TestServer {
    TestServer::start(
        PoolConfig {
            workers,
            write_timeout,
            ..PoolConfig::default()
        },
        BodyLimits::default(),
    )
    .await
}

/// What `/big.php?mb={mb}` sends.
fn big_body(mb: usize) -> Vec<u8> {
    let pad = ".".repeat(53);
    (0..mb * 16384)
        .flat_map(|i| format!("{i:010}{pad}\n").into_bytes())
        .collect()
}

fn digest(data: &[u8]) -> String {
    format!("{} bytes, md5 {:x}", data.len(), md5::compute(data))
}

/// Files this process holds open that were deleted from the temporary directory: the spool's
/// (and any other) anonymous temp files.
fn open_temp_files() -> usize {
    common::php_runtime(); // PHP's own (OPcache's lock file) are open from its start on
    let temp_dir = std::env::temp_dir();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| {
            target.starts_with(&temp_dir) && target.to_string_lossy().ends_with(" (deleted)")
        })
        .count()
}

/// A normal request on a connection of its own must be answered while the slow clients wait.
async fn assert_php_still_answers(server: &TestServer) {
    let response = tokio::time::timeout(
        Duration::from_secs(5),
        server.get(Proto::Http1, "/index.php"),
    )
    .await
    .expect("PHP answers within 5 s while the slow clients read nothing");
    assert_eq!(response.status(), StatusCode::OK);
}

async fn assert_spool_emptied(server: &TestServer, temp_files_before: usize) {
    server
        .wait_for("the spool to give back its files and space", |s| {
            s.spool_files == 0 && s.spooled_bytes == 0
        })
        .await;
    assert_eq!(
        open_temp_files(),
        temp_files_before,
        "no temp file left open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_streams_that_read_nothing_do_not_hold_the_workers() {
    let _serial = SERIAL.lock().await;
    let temp_files_before = open_temp_files();
    let server = server(2, Duration::from_secs(60)).await;
    // One connection whose streams may receive no body byte (INITIAL_WINDOW_SIZE=0), as many
    // streams as workers, each asking for 8 MiB.
    let mut slow = H2Client::connect(server.addr, 0).await;
    let mut bodies = Vec::new();
    for _ in 0..2 {
        let response = slow.get(server.addr, "/big.php?mb=8").await;
        assert_eq!(response.status(), StatusCode::OK);
        bodies.push(response.into_body());
    }
    server
        .wait_for("both scripts to finish though nothing was read", |s| {
            s.busy_workers == 0
        })
        .await;
    assert_eq!(
        server.pool.stats().spool_files,
        2,
        "their output went to temp files"
    );
    assert_php_still_answers(&server).await;

    let _ = slow.set_window.send(1 << 20);
    // Read concurrently: an unread stream would hold the connection's window.
    let readers: Vec<_> = bodies
        .into_iter()
        .map(|mut body| tokio::spawn(async move { read_h2_body(&mut body).await }))
        .collect();
    let expected = digest(&big_body(8));
    for reader in readers {
        let (data, end) = reader.await.unwrap();
        end.expect("the stream ends normally");
        assert_eq!(digest(&data), expected, "every byte arrives, in order");
    }
    assert_spool_emptied(&server, temp_files_before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_connections_that_read_nothing_do_not_hold_the_workers() {
    let _serial = SERIAL.lock().await;
    let temp_files_before = open_temp_files();
    let server = server(2, Duration::from_secs(60)).await;
    let mut responses = Vec::new();
    for _ in 0..2 {
        // A small receive buffer, and a client that takes the head but not the body.
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(server.addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let request = Request::get("/big.php?mb=16")
            .header("host", "t")
            .body(Empty::<Bytes>::new())
            .unwrap();
        responses.push(sender.send_request(request).await.unwrap());
    }
    server
        .wait_for("both scripts to finish though nothing was read", |s| {
            s.busy_workers == 0
        })
        .await;
    assert_php_still_answers(&server).await;

    let expected = digest(&big_body(16));
    for response in responses {
        let data = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(digest(&data), expected, "every byte arrives, in order");
    }
    assert_spool_emptied(&server, temp_files_before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_after_the_script_ended_is_given_up() {
    let _serial = SERIAL.lock().await;
    let temp_files_before = open_temp_files();
    let server = server(1, Duration::from_millis(500)).await;
    let mut slow = H2Client::connect(server.addr, 0).await;
    let response = slow.get(server.addr, "/big.php?mb=4").await;
    server
        .wait_for("the script to finish", |s| s.busy_workers == 0)
        .await;
    // Nothing read for the write timeout: the spool is dropped while the client is still there.
    assert_spool_emptied(&server, temp_files_before).await;

    let _ = slow.set_window.send(1 << 20);
    let (data, end) = read_h2_body(&mut response.into_body()).await;
    let error = end.expect_err("the stream is reset, not ended as if complete");
    assert!(error.is_reset(), "{error:?}");
    assert!(data.len() < 4 << 20, "{} bytes arrived", data.len());
}
