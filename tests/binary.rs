//! The `tokio_php` binary as a user runs it: configuration from the environment, startup errors,
//! serving, and a clean exit on SIGTERM.

mod common;

use std::time::Duration;

use common::process::{binary, Server};
use common::{metric, text, Proto, BOTH};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs the binary expecting it to refuse to start; returns its stderr.
fn startup_error(variable: &str, value: &str) -> String {
    startup_error_with(binary(), variable, value)
}

/// [`startup_error`] for a command with more settings of its own.
fn startup_error_with(mut command: std::process::Command, variable: &str, value: &str) -> String {
    let output = command
        .env(variable, value)
        .output()
        .expect("the binary runs");
    assert!(
        !output.status.success(),
        "{variable}={value} must stop the server"
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn bad_configuration_fails_at_startup_naming_the_variable() {
    for (variable, value) in [
        ("PHP_WORKERS", "many"),
        ("QUEUE_CAPACITY", "-1"),
        ("LISTEN_ADDR", "not-an-address"),
        ("USE_STUB", "maybe"),
        ("USE_EXT", "perhaps"),
        ("TRUSTED_PROXIES", "10.0.0.0/33"),
        ("TRUSTED_PROXIES", "10.0.0.1, balancer.local"),
        ("MAX_BODY_SIZE", "lots"),
        ("BODY_SPILL_THRESHOLD", "1T"),
        ("HEADER_READ_TIMEOUT", "soon"),
        ("OUTPUT_BUFFER_SIZE", "lots"),
        ("OUTPUT_BUFFER_SIZE", "0"),
        ("OUTPUT_SPOOL_SIZE", "-1G"),
        ("WRITE_TIMEOUT", "never"),
        ("WRITE_TIMEOUT", "0s"),
        ("DOCUMENT_ROOT", "/nonexistent/tokio_php/root"),
        ("REQUEST_TIMEOUT", "soon"),
        ("RATE_LIMIT", "-1"),
        ("RATE_WINDOW", "0"),
        ("STATIC_CACHE_TTL", "forever"),
        ("INDEX_FILE", "no-such-front-controller.php"),
        ("TRY_FILES", "$uri /index.php?$host"),
        ("TRY_FILES", "$uri $uri/ /no-such-script.php?$args"),
        ("TRY_FILES", "$uri /../outside.php"),
        ("TRY_FILES", "/index.php"),
        ("ERROR_PAGES_DIR", "/nonexistent/tokio_php/errors"),
        ("PROFILE", "maybe"),
        ("ACCESS_LOG", "sometimes"),
        ("TLS_CERT", "/nonexistent/cert.pem"),
        ("TLS_HANDSHAKE_TIMEOUT", "fast"),
        ("MAX_HEADER_SIZE", "huge"),
        ("MAX_HEADERS", "0"),
        ("H2_MAX_CONCURRENT_STREAMS", "0"),
        ("DRAIN_TIMEOUT_SECS", "-1"),
    ] {
        let stderr = startup_error(variable, value);
        assert!(stderr.contains(variable), "{variable}={value}: {stderr}");
    }
}

#[test]
fn an_otlp_protocol_or_timeout_this_build_cannot_honour_stops_startup() {
    for (variable, value, expected) in [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "http/protobuf only"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s", "expected milliseconds"),
    ] {
        let mut command = binary();
        command.env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        let stderr = startup_error_with(command, variable, value);
        assert!(
            stderr.contains(variable) && stderr.contains(expected),
            "{variable}={value}: {stderr}"
        );
    }
}

#[test]
fn try_files_errors_say_what_is_wrong() {
    for (value, expected) in [
        ("$uri /index.php?$host", "unknown variable $host"),
        (
            "$uri $uri/ /missing.php?$args",
            "/missing.php does not exist",
        ),
        ("$uri /../outside.php", "inside the document root"),
        ("$uri =999", "status code"),
    ] {
        let stderr = startup_error("TRY_FILES", value);
        assert!(stderr.contains(expected), "TRY_FILES={value}: {stderr}");
    }
    let output = binary()
        .env("TRY_FILES", "$uri /index.php?$args")
        .env("INDEX_FILE", "index.php")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("INDEX_FILE=index.php and TRY_FILES=$uri /index.php?$args are both set"),
        "{stderr}"
    );
}

#[test]
fn unusable_tls_files_stop_startup_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not pem").unwrap();
    for (cert, key, expected) in [
        (
            "/nonexistent/cert.pem",
            junk.to_str().unwrap(),
            "TLS_CERT=/nonexistent/cert.pem",
        ),
        (
            junk.to_str().unwrap(),
            junk.to_str().unwrap(),
            "no PEM certificate",
        ),
    ] {
        let output = binary()
            .env("TLS_CERT", cert)
            .env("TLS_KEY", key)
            .output()
            .unwrap();
        assert!(!output.status.success(), "no fallback to plain HTTP");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_php_and_exits_cleanly_on_sigterm() {
    let server = Server::start(&mut binary());
    for proto in BOTH {
        let response = server.get(proto, "/index.php").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(text(&response), "index of /index.php");
    }
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
}

#[test]
fn sigterm_right_after_listening_drains_instead_of_killing() {
    // The signal handlers are in place before the "listening" line: a SIGTERM at once still
    // ends in an orderly exit 0, never in death by the signal's default action.
    for _ in 0..20 {
        let status = Server::start(&mut binary()).terminate();
        assert!(status.success(), "exit status {status}");
    }
}

#[test]
fn log_lines_name_the_service_of_otel_service_name() {
    let server = Server::start(binary().env("OTEL_SERVICE_NAME", "shop"));
    let lines = server.wait_for_logs("app", 1);
    assert!(!lines.is_empty());
    assert!(
        lines.iter().all(|line| line["ctx"]["service"] == "shop"),
        "{lines:?}"
    );
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");

    let server = Server::start(&mut binary());
    let lines = server.wait_for_logs("app", 1);
    assert_eq!(lines[0]["ctx"]["service"], "tokio_php", "{lines:?}");
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stub_answers_empty_200s_without_php() {
    let server = Server::start(binary().env("USE_STUB", "1"));
    for proto in [Proto::Http1, Proto::H2c] {
        // A script that exists, so the request reaches where PHP would run.
        let response = server.get(proto, "/index.php").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.body().is_empty());
    }
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_cover_php_streamed_and_refused_requests() {
    let server = Server::start(binary().env("ACCESS_LOG", "1").env("RATE_LIMIT", "2"));
    let get = |path: &'static str| server.get(Proto::Http1, path);
    assert_eq!(get("/large.php").await.body().len(), 1 << 20);
    assert_eq!(
        get("/fatal.php").await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        get("/index.php").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    let lines = server.wait_for_logs("access", 3);
    let statuses: Vec<_> = lines
        .iter()
        .map(|l| l["data"]["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [200, 500, 429]);
    assert_eq!(
        lines[0]["data"]["bytes"],
        1 << 20,
        "the streamed body, counted"
    );
    assert_eq!(lines[0]["data"]["path"], "/large.php");
    assert_eq!(lines[0]["data"]["completed"], true);
    for line in &lines {
        for id in ["request_id", "trace_id", "span_id"] {
            assert!(line["ctx"][id].is_string(), "{id} in {line}");
        }
        assert_eq!(line["ctx"]["service"], "tokio_php");
        assert!(line["ts"].as_str().unwrap().ends_with('Z'));
    }
    // PHP's fatal error became an `error` line carrying the same request's ids.
    let errors = server.wait_for_logs("error", 1);
    assert!(errors[0]["msg"]
        .as_str()
        .unwrap()
        .contains("undefined_function_for_a_fatal_error"));
    assert_eq!(
        errors[0]["ctx"]["request_id"],
        lines[1]["ctx"]["request_id"]
    );
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_refuses_new_connections() {
    // The internal server only shows when the requests are in flight.
    let server = Server::start(
        binary()
            .env("PHP_WORKERS", "2")
            .env("INTERNAL_ADDR", "127.0.0.1:0"),
    );
    let addr = server.addr;
    // Two slow scripts (one per worker), one queued behind them, and a streamed response.
    let mut in_flight = Vec::new();
    for (proto, path) in [
        (Proto::Http1, "/slow.php?ms=1500"),
        (Proto::H2c, "/slow.php?ms=1500"),
        (Proto::Http1, "/stream.php?n=60"),
    ] {
        in_flight.push(tokio::spawn(
            async move { common::get(addr, proto, path).await },
        ));
    }
    server
        .wait_for_metrics("both workers busy and one request queued", |m| {
            metric(m, "tokio_php_php_workers_busy") == 2.0
                && metric(m, "tokio_php_pending_requests") == 1.0
        })
        .await;
    server.sigterm();
    // Logged once the listener is closed.
    server.wait_for_log_message("draining open connections");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "new connections are refused while draining"
    );
    for request in in_flight {
        let response = request.await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.body();
        assert!(
            body.starts_with(b"{") || body.len() == 60 * 1024,
            "complete body: {} bytes",
            body.len()
        );
    }
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_opened_before_sigterm_gets_its_request_served() {
    // A balancer's connection made just before the drain, its request still on the way: hyper
    // would close a connection that has sent nothing at once; the server gives it a moment.
    let server = Server::start(binary().env("INTERNAL_ADDR", "127.0.0.1:0"));
    let mut early = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    server
        .wait_for_metrics("the early connection accepted", |m| {
            metric(m, "tokio_php_active_connections") >= 1.0
        })
        .await;
    server.sigterm();
    server.wait_for_log_message("draining open connections");
    early
        .write_all(b"GET /index.php HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), early.read_to_end(&mut response))
        .await
        .expect("the server answers and closes within 10 s")
        .expect("the connection is closed, not reset");
    // Closed after its response (which says `connection: close` when the shutdown reached the
    // connection before the response was written).
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_internal_server_reports_health_config_and_draining() {
    let server = Server::start(
        binary()
            .env("INTERNAL_ADDR", "127.0.0.1:0")
            .env("TLS_KEY", "")
            .env("RATE_LIMIT", "1000"),
    );
    let health = server.internal_get("/health").await;
    assert_eq!(health.status(), StatusCode::OK);
    let health: serde_json::Value = serde_json::from_slice(health.body()).unwrap();
    assert_eq!(health["status"], "ok");
    assert!(health["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(health["active_connections"].is_u64() && health["total_requests"].is_u64());
    assert_eq!(health["php_workers_alive"], 2);

    let config: serde_json::Value =
        serde_json::from_slice(server.internal_get("/config").await.body()).unwrap();
    assert_eq!(config["php_workers"], 2);
    assert_eq!(config["rate_limit"], 1000);
    assert_eq!(config["request_timeout"], "2m");
    assert_eq!(config["output_buffer_size"], 256 * 1024);
    assert_eq!(config["output_spool_size"], 1u64 << 30);
    assert_eq!(config["write_timeout"], "1m");
    assert_eq!(
        server.internal_get("/nope").await.status(),
        StatusCode::NOT_FOUND
    );

    // While a slow request drains after SIGTERM, /health says so.
    let addr = server.addr;
    let slow =
        tokio::spawn(async move { common::get(addr, Proto::Http1, "/slow.php?ms=1500").await });
    wait_for_busy_workers(&server, 1).await;
    server.sigterm();
    // Logged once the drain has begun.
    server.wait_for_log_message("draining open connections");
    let draining = server.internal_get("/health").await;
    assert_eq!(draining.status(), StatusCode::SERVICE_UNAVAILABLE);
    let draining: serde_json::Value = serde_json::from_slice(draining.body()).unwrap();
    assert_eq!(draining["status"], "draining");
    assert_eq!(slow.await.unwrap().status(), StatusCode::OK);
    assert!(server.terminate().success());
}

/// Waits (bounded) until the internal `/metrics` reports `busy` busy PHP workers.
async fn wait_for_busy_workers(server: &Server, busy: usize) {
    server
        .wait_for_metrics(&format!("{busy} busy PHP workers"), |m| {
            metric(m, "tokio_php_php_workers_busy") == busy as f64
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_takes_at_most_one_drain_timeout() {
    let drain = Duration::from_secs(3);
    let server = Server::start(
        binary()
            .env("PHP_WORKERS", "1")
            .env("INTERNAL_ADDR", "127.0.0.1:0")
            .env("DRAIN_TIMEOUT_SECS", drain.as_secs().to_string()),
    );
    // A script that outlives the drain: the connections' drain and the workers' drain used to
    // wait one DRAIN_TIMEOUT_SECS each.
    let addr = server.addr;
    let stuck = tokio::spawn(async move {
        common::raw_exchange(
            addr,
            b"GET /slow.php?ms=20000 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .await
    });
    wait_for_busy_workers(&server, 1).await;
    let signalled = std::time::Instant::now();
    let status = server.terminate();
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(
        took < drain + Duration::from_millis(1500),
        "exited {took:?} after SIGTERM with DRAIN_TIMEOUT_SECS={}",
        drain.as_secs()
    );
    stuck.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_cannot_signal_the_server_process() {
    let mut server = Server::start(&mut binary());
    let response = server.get(Proto::Http1, "/kill.php").await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let errors = server.wait_for_logs("error", 1);
    assert!(
        errors.iter().any(|e| e["msg"]
            .as_str()
            .is_some_and(|m| m.contains("undefined function posix_kill()"))),
        "{errors:?}"
    );
    let next = server.get(Proto::Http1, "/index.php").await;
    assert_eq!(next.status(), StatusCode::OK);
    assert!(server.child.try_wait().unwrap().is_none(), "still running");
    assert!(server.terminate().success());
}
