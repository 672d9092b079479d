//! REQUEST_TIMEOUT with real PHP: 504 when the deadline passes, the script really stopped and its
//! worker free, and tokio_request_heartbeat() moving the deadline.

mod common;

use std::time::{Duration, Instant};

use common::{json, Proto, TestServer, BOTH};
use http::StatusCode;
use tokio_php::layer::TimeoutLayer;
use tokio_php::php::PoolConfig;
use tower::Layer;

async fn server(timeout: Duration) -> TestServer {
    TestServer::serve(
        PoolConfig {
            workers: 1,
            ..PoolConfig::default()
        },
        |pool| TimeoutLayer::new(timeout).layer(TestServer::php_service(pool)),
    )
    .await
}

/// After a 504, the worker must be free again within a second (it is in milliseconds when the
/// script is really interrupted; a script left running would hold it for minutes).
async fn assert_worker_freed_soon(server: &TestServer, after_504: Instant) {
    while server.pool.stats().busy_workers != 0 {
        assert!(
            after_504.elapsed() < Duration::from_secs(1),
            "the PHP worker is still busy a second after the 504"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_scripts_get_504_and_are_stopped() {
    let server = server(Duration::from_secs(1)).await;
    // A busy loop (stopped at its next opcode) and a blocking sleep(600) (woken by a signal).
    for script in ["/loop.php", "/sleep.php"] {
        for proto in BOTH {
            let response = server.get(proto, script).await;
            assert_eq!(
                response.status(),
                StatusCode::GATEWAY_TIMEOUT,
                "{script} {proto:?}"
            );
            assert_worker_freed_soon(&server, Instant::now()).await;
            assert_eq!(
                server.get(proto, "/index.php").await.status(),
                StatusCode::OK
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_script_still_runs_its_shutdown_functions() {
    let server = server(Duration::from_secs(1)).await;
    let token = format!("t{}", std::process::id());
    let marker = std::env::temp_dir().join(format!("tokio_php_shutdown_{token}"));
    let _ = std::fs::remove_file(&marker);
    let response = server
        .get(Proto::Http1, &format!("/shutdown_marker.php?token={token}"))
        .await;
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_worker_freed_soon(&server, Instant::now()).await;
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "ran");
    std::fs::remove_file(&marker).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_a_long_request_alive() {
    let server = server(Duration::from_secs(1)).await;
    for proto in BOTH {
        // 3 × 600 ms = 1.8 s of work under a 1 s timeout, with a heartbeat of 1 s after each step.
        let response = server
            .get(proto, "/heartbeat.php?beats=3&ms=600&extend=1")
            .await;
        assert_eq!(response.status(), StatusCode::OK, "{proto:?}");
        let result = json(&response);
        assert_eq!(result["beats"], serde_json::json!([true, true, true]));
        assert_eq!(result["zero"], false, "$time <= 0 is refused");
        assert_eq!(result["negative"], false);
        assert_eq!(
            result["too_long"], false,
            "$time > REQUEST_TIMEOUT is refused"
        );
    }
    // The same work without heartbeats times out.
    let response = server.get(Proto::Http1, "/slow.php?ms=1800").await;
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_report_false_when_timeouts_are_off() {
    let server = TestServer::with_workers(1).await;
    let result = json(
        &server
            .get(Proto::Http1, "/heartbeat.php?beats=1&ms=1&extend=5")
            .await,
    );
    assert_eq!(result["beats"], serde_json::json!([false]));
}
