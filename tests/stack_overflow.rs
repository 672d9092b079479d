//! A C stack overflow inside PHP (recursion through internal functions, `__toString()`,
//! `serialize()` of a deeply nested array, …) fails only its own request: `500` and a fatal-error
//! log line, while the process, every other request in flight and the worker itself carry on.
//! Run against the real binary, as a user would: before the stack guard, the process aborted.

mod common;

use common::process::{binary, Server};
use common::{metric, text, Proto, BOTH};
use http::StatusCode;

const WORKERS: usize = 2;

/// Each overflows in a different place: a user function recursing through `array_map()`,
/// `__toString()` recursion, `serialize()` of a 300k-deep array, recursion inside a Fiber (its
/// own smaller stack), and freeing a deep structure during request shutdown (twice: see below).
const OVERFLOWS: [&str; 6] = [
    "/overflow/array_map.php",
    "/overflow/to_string.php",
    "/overflow/serialize.php",
    "/overflow/fiber.php",
    "/overflow/freed_at_shutdown.php",
    ESCAPES_SHUTDOWN,
];

/// The one overflow above that cuts request shutdown itself short, outside PHP's own recovery
/// points: that worker's PHP state is half torn down, so it is replaced.
const ESCAPES_SHUTDOWN: &str = "/overflow/escapes_shutdown.php";

fn start_server(workers: usize) -> Server {
    Server::start(
        binary()
            .env("PHP_WORKERS", workers.to_string())
            .env("INTERNAL_ADDR", "127.0.0.1:0"),
    )
}

/// Every worker is alive and idle, `replaced` of them replaced since start.
async fn wait_for_idle_pool(server: &Server, workers: usize, replaced: usize) -> String {
    server
        .wait_for_metrics("an idle pool at full strength", |m| {
            metric(m, "tokio_php_php_workers_busy") == 0.0
                && metric(m, "tokio_php_php_workers") == workers as f64
                && metric(m, "tokio_php_php_workers_replaced_total") == replaced as f64
        })
        .await
}

fn assert_alive(server: &mut Server) {
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server process is still running"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overflow_fails_only_its_request() {
    let mut server = start_server(WORKERS);
    let mut replaced = 0;
    for path in OVERFLOWS {
        // A slow request holds the other worker while the overflow happens.
        let addr = server.addr;
        let slow = tokio::spawn(async move {
            let request = http::Request::get("/slow.php?ms=1000")
                .body(Default::default())
                .unwrap();
            common::send(addr, Proto::Http1, request).await
        });
        server
            .wait_for_metrics("the slow request to run", |m| {
                metric(m, "tokio_php_php_workers_busy") == 1.0
            })
            .await;

        let response = server.get(Proto::Http1, path).await;
        assert_eq!(
            response.status(),
            StatusCode::INTERNAL_SERVER_ERROR,
            "{path}"
        );
        assert_eq!(
            text(&response),
            "500 Internal Server Error\n",
            "{path}: the server's own error body, none of PHP's output"
        );

        let slow = slow.await.unwrap();
        assert_eq!(
            slow.status(),
            StatusCode::OK,
            "{path}: the request in flight"
        );
        assert!(text(&slow).contains("\"worker\""), "{}", text(&slow));

        // The worker that overflowed stays in service, unless request shutdown was cut short.
        replaced += usize::from(path == ESCAPES_SHUTDOWN);
        wait_for_idle_pool(&server, WORKERS, replaced).await;
        let next = server.get(Proto::Http1, "/index.php").await;
        assert_eq!(text(&next), "index of /index.php", "after {path}");
        assert_alive(&mut server);
    }

    let scraped = server.metrics().await;
    assert_eq!(
        metric(&scraped, "tokio_php_php_fatal_errors_total"),
        OVERFLOWS.len() as f64,
        "each overflow counts as a fatal error"
    );
    let errors = server.wait_for_logs("error", OVERFLOWS.len());
    for path in OVERFLOWS {
        let file = format!("{}{path}", common::fixtures_root().display());
        assert!(
            errors.iter().any(|line| {
                let message = line["msg"].as_str().unwrap_or("");
                message.contains("PHP Fatal error:  Maximum call stack size of")
                    && message.contains(&file)
            }),
            "a fatal error line names {file}: {errors:#?}"
        );
    }
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_overflows_in_a_row_leave_the_server_serving() {
    let mut server = start_server(WORKERS);
    const ROUNDS: usize = 20;
    for (round, path) in OVERFLOWS[..3].iter().cycle().take(ROUNDS).enumerate() {
        let proto = BOTH[round % 2];
        let response = server.get(proto, path).await;
        assert_eq!(
            response.status(),
            StatusCode::INTERNAL_SERVER_ERROR,
            "round {round}: {path} over {proto:?}"
        );
    }
    let scraped = wait_for_idle_pool(&server, WORKERS, 0).await;
    assert_eq!(
        metric(&scraped, "tokio_php_php_fatal_errors_total"),
        ROUNDS as f64
    );
    assert_alive(&mut server);

    // Normal traffic on both workers at once, over both protocols.
    for proto in BOTH {
        let requests: Vec<_> = (0..WORKERS)
            .map(|_| {
                let addr = server.addr;
                tokio::spawn(async move {
                    let request = http::Request::get("/slow.php?ms=300")
                        .body(Default::default())
                        .unwrap();
                    common::send(addr, proto, request).await
                })
            })
            .collect();
        let mut workers = std::collections::BTreeSet::new();
        for request in requests {
            let response = request.await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{proto:?}");
            let run: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
            workers.insert(run["worker"].as_i64().unwrap());
        }
        assert_eq!(workers.len(), WORKERS, "{proto:?}: both workers serve");
        assert_eq!(
            text(&server.get(proto, "/index.php").await),
            "index of /index.php"
        );
    }
    assert!(server.terminate().success());
}

/// Replacing the worker after an overflow was the first design. On PHP 8.2 with the JIT it made
/// the process crash soon after: JIT code compiled on a thread keeps pointers to that thread's
/// copies of PHP's internal functions, freed when it exits (php-src #10473), and the next notice
/// raised from such code read them. One worker, so every overflow and every hot loop share it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_jit_code_keeps_working_after_overflows_on_its_worker() {
    let mut server = start_server(1);
    for round in 0..5 {
        let overflow = server.get(Proto::Http1, "/overflow/array_map.php").await;
        assert_eq!(overflow.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let hot = server.get(Proto::Http1, "/hot_notices.php").await;
        assert_eq!(text(&hot), "done on worker 0", "round {round}");
        assert_alive(&mut server);
    }
    wait_for_idle_pool(&server, 1, 0).await;
    assert!(server.terminate().success());
}
