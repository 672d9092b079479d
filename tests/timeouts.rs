//! REQUEST_TIMEOUT with real PHP: 504 when the deadline passes, the script really stopped and its
//! worker free — also once its response is streaming —, tokio_request_heartbeat() moving the
//! deadline, and every timeout (PHP's max_execution_time too) counted in the metrics.

mod common;

use std::time::{Duration, Instant};

use common::{get_until_end, json, BodyEnd, Proto, TestServer, BOTH};
use http::StatusCode;
use tokio_php::layer::{RecordMetricsLayer, TimeoutLayer};
use tokio_php::php::PoolConfig;
use tokio_php::telemetry::Metrics;
use tower::{Layer, ServiceBuilder};

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

/// [`server`] with request metrics recorded into the returned registry.
async fn metered_server(timeout: Duration) -> (TestServer, Metrics) {
    let metrics = Metrics::new();
    let layer_metrics = metrics.clone();
    let server = TestServer::serve(
        PoolConfig {
            workers: 1,
            ..PoolConfig::default()
        },
        move |pool| {
            ServiceBuilder::new()
                .layer(RecordMetricsLayer::new(layer_metrics))
                .layer(TimeoutLayer::new(timeout))
                .service(TestServer::php_service(pool))
        },
    )
    .await;
    (server, metrics)
}

/// `tokio_php_timed_out_requests_total` as `/metrics` would show it.
fn timed_out_total(server: &TestServer, metrics: &Metrics) -> u64 {
    let text = metrics.render(0, Some(server.pool.stats()), None);
    common::metric(&text, "tokio_php_timed_out_requests_total") as u64
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_that_flushed_is_still_stopped_at_the_deadline() {
    let (server, metrics) = metered_server(Duration::from_secs(1)).await;
    for proto in BOTH {
        let started = Instant::now();
        let (parts, body, end) = get_until_end(server.addr, proto, "/flush_then_sleep.php").await;
        assert_eq!(
            parts.status,
            StatusCode::OK,
            "{proto:?}: the head left before the deadline"
        );
        assert_eq!(&body[..], b"started;", "{proto:?}");
        assert!(
            matches!(end, BodyEnd::Broken(_)),
            "{proto:?}: a response cut by the deadline must not look complete: {end:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{proto:?}: the script (sleeping 60 s) was stopped at the 1 s deadline, not run to its end"
        );
        assert_worker_freed_soon(&server, Instant::now()).await;
    }
    assert_eq!(server.pool.stats().timeouts, 2);
    assert_eq!(
        timed_out_total(&server, &metrics),
        2,
        "both count as timeouts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_move_the_deadline_after_the_head_too() {
    let (server, metrics) = metered_server(Duration::from_secs(1)).await;
    for proto in BOTH {
        // 3 × 600 ms under a 1 s timeout, each step extending it by 1 s.
        let (parts, body, end) = get_until_end(server.addr, proto, "/streamed_heartbeat.php").await;
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(&body[..], b"started;beat;beat;beat;done", "{proto:?}");
        assert!(matches!(end, BodyEnd::Complete), "{proto:?}: {end:?}");
    }
    assert_eq!(timed_out_total(&server, &metrics), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_execution_time_counts_as_a_timeout() {
    assert!(
        tokio_php::php::has_thread_timers(),
        "this PHP has no per-thread execution timers, so max_execution_time is off: build it with \
         --enable-zend-max-execution-timers (scripts/build-php.sh does)"
    );
    let (server, metrics) = metered_server(Duration::from_secs(30)).await;
    let (parts, _, end) = get_until_end(server.addr, Proto::Http1, "/time_limit.php?s=1").await;
    assert_eq!(parts.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        matches!(end, BodyEnd::Complete),
        "before the head: a plain 500"
    );
    let (parts, body, end) =
        get_until_end(server.addr, Proto::H2c, "/time_limit.php?s=1&flush=1").await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(&body[..], b"started;");
    assert!(matches!(end, BodyEnd::Broken(_)), "after the head: {end:?}");
    assert_eq!(server.pool.stats().timeouts, 2);
    assert_eq!(timed_out_total(&server, &metrics), 2);
}

/// A worker keeps its execution timer from one request to the next (scripts/php-patches/0006):
/// the timer still fires on a later request, and a limit armed by an earlier request that
/// finished in time never fires into the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_workers_execution_timer_serves_request_after_request() {
    let server = server(Duration::from_secs(30)).await;
    let status = |path: &'static str| {
        let server = &server;
        async move { server.get(Proto::Http1, path).await.status() }
    };
    assert_eq!(
        status("/time_limit.php?s=1").await,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    // Arms a 1 s limit and finishes at once; the next request runs 1.5 s with the default limit.
    assert_eq!(status("/busy.php?limit=1").await, StatusCode::OK);
    let response = server.get(Proto::Http1, "/busy.php?ms=1500").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(common::text(&response), "done");
    assert_eq!(
        status("/time_limit.php?s=1").await,
        StatusCode::INTERNAL_SERVER_ERROR,
        "the same worker's timer fires again"
    );
    assert_eq!(server.pool.stats().timeouts, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_finishes_arriving_gets_408_and_the_connection_closes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = server(Duration::from_secs(1)).await;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // Promises 100 bytes, sends 10, then nothing.
    stream
        .write_all(b"POST /dump.php HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response));
    read.await.expect("the server answers and closes").unwrap();
    let response = String::from_utf8_lossy(&response);
    assert_eq!(common::raw_status(&response), 408, "{response}");
    assert!(response.contains("connection: close"), "{response}");
    assert_eq!(
        server.get(Proto::Http1, "/index.php").await.status(),
        StatusCode::OK
    );
}
