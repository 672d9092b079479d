//! Bad input and failing scripts: each gets a clear error and the next request still works.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;

use common::{
    get_until_end, json, raw_exchange, raw_status, raw_until_closed, read_h2_body, send, text,
    BodyEnd, H2Client, Proto, TestServer, BOTH,
};
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio_php::{http::BodyLimits, php::PoolConfig};

const WORKERS: usize = 3;

/// Sends one request per worker at once; each script holds its worker long enough that every
/// worker gets exactly one.
async fn one_per_worker(
    server: &TestServer,
    proto: Proto,
    path: &str,
) -> Vec<http::Response<Bytes>> {
    concurrent_gets(server, proto, path, WORKERS).await
}

/// `count` GETs of `path`, all in flight at once.
async fn concurrent_gets(
    server: &TestServer,
    proto: Proto,
    path: &str,
    count: usize,
) -> Vec<http::Response<Bytes>> {
    let handles: Vec<_> = (0..count)
        .map(|_| {
            let (addr, path) = (server.addr, path.to_string());
            tokio::spawn(async move { common::get(addr, proto, &path).await })
        })
        .collect();
    let mut responses = Vec::new();
    for handle in handles {
        responses.push(handle.await.unwrap());
    }
    responses
}

fn workers_of(responses: &[http::Response<Bytes>]) -> BTreeSet<String> {
    responses
        .iter()
        .map(|r| r.headers()["x-worker"].to_str().unwrap().to_string())
        .collect()
}

/// Every worker answers a good request correctly, with no state left from before.
async fn assert_every_worker_healthy(server: &TestServer, proto: Proto) {
    let responses = one_per_worker(server, proto, "/slow.php?ms=800").await;
    let mut seen = BTreeSet::new();
    for response in &responses {
        assert_eq!(response.status(), StatusCode::OK);
        seen.insert(json(response)["worker"].as_i64().unwrap());
    }
    assert_eq!(
        seen.len(),
        WORKERS,
        "{proto:?}: every worker served a request: {seen:?}"
    );
    let limits = json(&server.get(proto, "/limits.php").await);
    assert_eq!(
        limits["memory_limit"], "128M",
        "ini_set() does not outlive its request"
    );
    assert_eq!(limits["leak"], false);
}

async fn server() -> TestServer {
    TestServer::with_workers(WORKERS).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fatal_errors_answer_500_and_every_worker_recovers() {
    let server = server().await;
    for proto in BOTH {
        let responses = one_per_worker(&server, proto, "/fatal.php?ms=800").await;
        for response in &responses {
            assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
            assert!(
                response.body().is_empty(),
                "display_errors is off: nothing leaks to the client"
            );
        }
        assert_eq!(
            workers_of(&responses).len(),
            WORKERS,
            "{proto:?}: a fatal error on every worker"
        );
        assert_every_worker_healthy(&server, proto).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncaught_exceptions_answer_500_and_every_worker_recovers() {
    let server = server().await;
    for proto in BOTH {
        let responses = one_per_worker(&server, proto, "/exception.php?ms=800").await;
        for response in &responses {
            assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        }
        assert_eq!(workers_of(&responses).len(), WORKERS);
        assert_every_worker_healthy(&server, proto).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_and_die_send_the_output_so_far() {
    let server = server().await;
    for proto in BOTH {
        let responses = one_per_worker(&server, proto, "/exit.php?ms=800").await;
        for response in &responses {
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(text(response), "before exit");
        }
        assert_eq!(workers_of(&responses).len(), WORKERS);
        let responses = one_per_worker(&server, proto, "/die.php?ms=800").await;
        for response in &responses {
            assert_eq!(text(response), "died here");
        }
        assert_eq!(workers_of(&responses).len(), WORKERS);
        assert_every_worker_healthy(&server, proto).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceeding_memory_limit_answers_500_and_every_worker_recovers() {
    let server = server().await;
    for proto in BOTH {
        let responses = one_per_worker(&server, proto, "/memory.php?ms=800").await;
        for response in &responses {
            assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        }
        assert_eq!(workers_of(&responses).len(), WORKERS);
        assert_every_worker_healthy(&server, proto).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_overflow_answers_500_and_its_worker_carries_on() {
    let server = server().await;
    let mut overflows = 0;
    for proto in BOTH {
        for path in [
            "/overflow/array_map.php",
            "/overflow/to_string.php",
            "/overflow/serialize.php",
        ] {
            let response = server.get(proto, path).await;
            assert_eq!(
                response.status(),
                StatusCode::INTERNAL_SERVER_ERROR,
                "{proto:?} {path}"
            );
            assert_eq!(text(&response), "500 Internal Server Error\n");
            overflows += 1;
            server
                .wait_for("the worker to be free", |s| s.busy_workers == 0)
                .await;
        }
        assert_every_worker_healthy(&server, proto).await;
    }
    let stats = server.pool.stats();
    assert_eq!(
        stats.fatal_errors, overflows,
        "each overflow is a fatal error"
    );
    assert_eq!(stats.live_workers, WORKERS);
    assert_eq!(stats.replaced_workers, 0, "the workers stay in service");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_error_after_output_keeps_the_status_and_breaks_the_body_off() {
    let server = server().await;
    for proto in BOTH {
        let (parts, body, end) = get_until_end(server.addr, proto, "/fatal_after_output.php").await;
        assert_eq!(
            parts.status,
            StatusCode::OK,
            "headers were already sent, as under FPM"
        );
        assert_eq!(&body[..], b"partial output");
        assert!(
            matches!(end, BodyEnd::Broken(_)),
            "{proto:?}: a response the script died in must not look complete: {end:?}"
        );
        assert_eq!(
            text(&server.get(proto, "/index.php").await),
            "index of /index.php"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_error_after_output_that_has_not_left_answers_500() {
    let server = server().await;
    for proto in BOTH {
        let (parts, body, end) =
            get_until_end(server.addr, proto, "/fatal_after_buffered_output.php").await;
        assert_eq!(
            parts.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{proto:?}: the client had seen nothing, so the partial page must not pass for a 200"
        );
        assert_eq!(&body[..], b"partial output", "{proto:?}");
        assert!(matches!(end, BodyEnd::Complete), "{proto:?}: {end:?}");
        assert_eq!(
            text(&server.get(proto, "/index.php").await),
            "index of /index.php"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_closes_a_broken_response_without_its_last_chunk() {
    let server = server().await;
    let (response, closed) = raw_until_closed(
        server.addr,
        b"GET /fatal_after_output.php HTTP/1.1\r\nHost: t\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    assert!(
        response.contains("transfer-encoding: chunked"),
        "{response:?}"
    );
    assert!(response.contains("partial output"), "{response:?}");
    assert!(
        !response.ends_with("0\r\n\r\n"),
        "no terminal chunk after a script died: {response:?}"
    );
    assert!(closed, "the connection is closed at once, not kept alive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_resets_a_broken_response_instead_of_ending_it() {
    let server = server().await;
    let mut client = H2Client::connect(server.addr, 65_535).await;
    let response = client.get(server.addr, "/fatal_after_output.php").await;
    assert_eq!(response.status(), StatusCode::OK);
    let (body, end) = read_h2_body(&mut response.into_body()).await;
    assert_eq!(&body[..], b"partial output");
    let error = end.expect_err("the stream is reset, not ended with END_STREAM");
    assert!(error.is_reset(), "{error:?}");
    assert_eq!(error.reason(), Some(h2::Reason::INTERNAL_ERROR));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_run_in_parallel_on_all_workers() {
    let server = TestServer::with_workers(2).await;
    for proto in BOTH {
        let responses = concurrent_gets(&server, proto, "/slow.php?ms=500", 2).await;
        let runs: Vec<_> = responses.iter().map(json).collect();
        assert_ne!(
            runs[0]["worker"], runs[1]["worker"],
            "{proto:?}: two workers"
        );
        let (a_start, a_end) = (
            runs[0]["start"].as_f64().unwrap(),
            runs[0]["end"].as_f64().unwrap(),
        );
        let (b_start, b_end) = (
            runs[1]["start"].as_f64().unwrap(),
            runs[1]["end"].as_f64().unwrap(),
        );
        assert!(
            a_start < b_end && b_start < a_end,
            "{proto:?}: the two scripts overlapped in time: {runs:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_at_once_and_recovers() {
    let server = TestServer::start(
        PoolConfig {
            workers: 1,
            queue_capacity: 1,
            ..PoolConfig::default()
        },
        BodyLimits::default(),
    )
    .await;
    for proto in BOTH {
        let addr = server.addr;
        server.wait_until_idle().await;
        // The worker stays busy until the test releases it, however slow the machine is.
        let release = std::env::temp_dir().join(format!(
            "tokio_php-release-{}-{proto:?}",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&release);
        let hold = format!("/hold.php?release={}", release.display());
        let running = tokio::spawn(async move { common::get(addr, proto, &hold).await });
        server
            .wait_for("the worker to run the held script", |s| {
                s.busy_workers == 1 && s.queued == 0
            })
            .await;
        let queued = tokio::spawn(async move { common::get(addr, proto, "/slow.php?ms=10").await });
        server.wait_for("a queued request", |s| s.queued == 1).await;

        let rejected = server.get(proto, "/index.php").await;
        assert_eq!(
            rejected.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{proto:?}"
        );
        assert_eq!(rejected.headers()["retry-after"], "1");
        assert_eq!(text(&rejected), "503 Service Unavailable\n");

        std::fs::write(&release, b"").unwrap();
        let released = running.await.unwrap();
        assert_eq!(released.status(), StatusCode::OK);
        assert_eq!(text(&released), "released");
        std::fs::remove_file(&release).unwrap();
        assert_eq!(queued.await.unwrap().status(), StatusCode::OK);
        assert_eq!(
            server.get(proto, "/index.php").await.status(),
            StatusCode::OK
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_gave_up_free_their_queue_slots() {
    let server = TestServer::start(
        PoolConfig {
            workers: 1,
            queue_capacity: 2,
            ..PoolConfig::default()
        },
        BodyLimits::default(),
    )
    .await;
    for proto in BOTH {
        let addr = server.addr;
        server.wait_until_idle().await;
        // The worker is held until the test releases it: both clients queue behind it, however
        // loaded the machine is.
        let release = std::env::temp_dir().join(format!(
            "tokio_php-release-gave-up-{}-{proto:?}",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&release);
        let hold = format!("/hold.php?release={}", release.display());
        let running = tokio::spawn(async move { common::get(addr, proto, &hold).await });
        server
            .wait_for("the worker to run the held script", |s| {
                s.busy_workers == 1 && s.queued == 0
            })
            .await;
        let gave_up: Vec<_> = (0..2)
            .map(|_| tokio::spawn(async move { common::get(addr, proto, "/slow.php?ms=10").await }))
            .collect();
        server
            .wait_for("two queued requests", |s| s.queued == 2)
            .await;
        for client in &gave_up {
            client.abort(); // closes the connection (HTTP/1.1) or resets the stream (h2)
        }
        for client in gave_up {
            assert!(client.await.unwrap_err().is_cancelled());
        }

        // The queue is full of requests nobody waits for. A newcomer takes a place they held:
        // the queue drops them (and counts them) instead of refusing it. The server learns that
        // a client left when hyper next looks at its connection, which for HTTP/1.1 is not at
        // once; until then a newcomer may still get 503: ask again, bounded.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let newcomer = loop {
            let abandoned_before = server.pool.stats().abandoned;
            let newcomer =
                tokio::spawn(async move { common::get(addr, proto, "/index.php").await });
            common::wait_until(
                "the newcomer to be queued or refused",
                Duration::from_secs(30),
                || {
                    let decided =
                        newcomer.is_finished() || server.pool.stats().abandoned > abandoned_before;
                    async move { decided }
                },
            )
            .await;
            if !newcomer.is_finished() {
                break newcomer; // queued in a place an abandoned request held
            }
            let refused = newcomer.await.unwrap();
            assert_eq!(
                refused.status(),
                StatusCode::SERVICE_UNAVAILABLE,
                "{proto:?}: {}",
                text(&refused)
            );
            assert!(
                std::time::Instant::now() < deadline,
                "{proto:?}: the abandoned requests still hold the queue"
            );
            // The poll interval of the bounded retry above.
            tokio::time::sleep(Duration::from_millis(20)).await;
        };

        std::fs::write(&release, b"").unwrap();
        let released = running.await.unwrap();
        assert_eq!(text(&released), "released");
        std::fs::remove_file(&release).unwrap();
        let after = newcomer.await.unwrap();
        assert_eq!(
            after.status(),
            StatusCode::OK,
            "{proto:?}: {}",
            text(&after)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fatal_errors_are_counted_by_their_type_not_their_log_text() {
    let server = TestServer::with_workers(1).await;
    let fatal_errors = || server.pool.stats().fatal_errors;
    let cases = [
        (
            "/errors_counted/quiet_fatal.php",
            StatusCode::INTERNAL_SERVER_ERROR,
            1,
        ),
        (
            "/errors_counted/parse_error.php",
            StatusCode::INTERNAL_SERVER_ERROR,
            1,
        ),
        ("/errors_counted/handled_user_error.php", StatusCode::OK, 0),
        ("/fatal.php", StatusCode::INTERNAL_SERVER_ERROR, 1),
    ];
    for (path, status, counted) in cases {
        let before = fatal_errors();
        let response = server.get(Proto::Http1, path).await;
        assert_eq!(response.status(), status, "{path}: {}", text(&response));
        assert_eq!(fatal_errors() - before, counted, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_worker_serves_normally_after_twenty_rounds_of_every_fault() {
    let server = server().await;
    let faults = [
        ("/fatal.php", StatusCode::INTERNAL_SERVER_ERROR),
        ("/exception.php", StatusCode::INTERNAL_SERVER_ERROR),
        ("/memory.php", StatusCode::INTERNAL_SERVER_ERROR),
        ("/exit.php", StatusCode::OK),
        ("/die.php", StatusCode::OK),
        (
            "/errors_counted/parse_error.php",
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
    ];
    for round in 0..20 {
        let proto = BOTH[round % 2];
        for (path, status) in faults {
            let responses = concurrent_gets(&server, proto, path, WORKERS).await;
            for response in responses {
                assert_eq!(response.status(), status, "round {round} {proto:?} {path}");
            }
        }
    }
    for proto in BOTH {
        assert_every_worker_healthy(&server, proto).await;
    }
    assert_eq!(server.pool.stats().live_workers, WORKERS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_and_the_next_request_works() {
    let server = TestServer::start(
        PoolConfig {
            workers: 1,
            ..PoolConfig::default()
        },
        BodyLimits {
            max_size: 1024,
            spill_threshold: 512,
        },
    )
    .await;
    for proto in BOTH {
        let request = Request::post("/dump.php")
            .body(Full::new(Bytes::from(vec![b'x'; 2048])))
            .unwrap();
        let response = send(server.addr, proto, request).await;
        assert_eq!(
            response.status(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "{proto:?}"
        );
        assert_eq!(text(&response), "413 Payload Too Large\n");

        let request = Request::post("/dump.php")
            .body(Full::new(Bytes::from(vec![b'x'; 1000])))
            .unwrap();
        let response = send(server.addr, proto, request).await;
        assert_eq!(
            json(&response)["input"].as_str().unwrap().len(),
            1000,
            "{proto:?}"
        );
    }
    // A chunked body (no Content-Length) is counted as it arrives.
    let chunk = "x".repeat(600);
    let request = format!(
        "POST /dump.php HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
    );
    let response = raw_exchange(server.addr, request.as_bytes()).await;
    assert_eq!(raw_status(&response), 413, "{response}");
    assert_eq!(
        server.get(Proto::Http1, "/index.php").await.status(),
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_never_reaches_outside_the_root() {
    let server = TestServer::with_workers(1).await;
    for path in [
        "/../secret.php",
        "/sub/../../secret.php",
        "/%2e%2e/secret.php",
        "/%2E%2E/%2e%2E/secret.php",
        "/sub/%2e%2e%2f%2e%2e%2fsecret.php",
        "/..%5csecret.php",
        "/index.php%00.txt",
        "/escape.php",
    ] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let response = raw_exchange(server.addr, request.as_bytes()).await;
        let status = raw_status(&response);
        assert!(status == 403 || status == 404, "{path}: {status}");
        assert!(
            !response.contains("SECRET"),
            "{path} reached a file outside the root"
        );
    }
    for proto in BOTH {
        let response = server.get(proto, "/escape.php").await;
        assert_eq!(
            response.status(),
            StatusCode::FORBIDDEN,
            "a symlink out of the root"
        );
        assert_eq!(
            server.get(proto, "/style.css").await.status(),
            StatusCode::NOT_FOUND,
            "not a script"
        );
        assert_eq!(
            server.get(proto, "/missing.php").await.status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            server.get(proto, "/index.php").await.status(),
            StatusCode::OK
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_http_gets_400_and_the_next_request_works() {
    let server = TestServer::with_workers(1).await;
    for garbage in [
        &b"THIS IS NOT HTTP\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    ] {
        let response = raw_exchange(server.addr, garbage).await;
        assert_eq!(
            raw_status(&response),
            400,
            "{:?} -> {response}",
            String::from_utf8_lossy(garbage)
        );
        assert_eq!(
            server.get(Proto::Http1, "/index.php").await.status(),
            StatusCode::OK
        );
    }
}
