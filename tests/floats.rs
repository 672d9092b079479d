//! Float ↔ string conversions are right on every worker at once.
//!
//! PHP's ZTS build shares dtoa's Bigint freelist between threads behind a mutex;
//! scripts/build-php.sh makes that state per thread instead (and serves `localeconv()` without
//! its lock while no script changed the locale). A fault in either shows as a wrong digit, a
//! crash or a hang when every worker formats and parses floats at the same time, which is what
//! this test does with `floats.php`: thousands of conversions per request, each checked by the
//! script against a value computed with integers only.

mod common;

use std::time::Duration;

use common::process::{binary, Server};
use common::{json, send, Proto};
use http::{Request, StatusCode};
use http_body_util::Full;

const WORKERS: usize = 4;
const CLIENTS: usize = 16;
const ROUNDS: usize = 3;
const CONVERSIONS_PER_REQUEST: u64 = 2000 * 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn float_conversions_are_exact_on_all_workers_concurrently() {
    let server = Server::start(binary().env("PHP_WORKERS", WORKERS.to_string()));
    for round in 0..ROUNDS {
        let requests = (0..CLIENTS).map(|client| {
            let addr = server.addr;
            let proto = if client % 2 == 0 {
                Proto::Http1
            } else {
                Proto::H2c
            };
            let seed = round * CLIENTS + client;
            tokio::spawn(async move {
                let request = Request::get(format!("/floats.php?n=2000&seed={seed}"))
                    .body(Full::default())
                    .unwrap();
                (seed, send(addr, proto, request).await)
            })
        });
        let responses = tokio::time::timeout(
            Duration::from_secs(120),
            futures_join_all(requests.collect()),
        )
        .await
        .expect("every request answers");
        for (seed, response) in responses {
            assert_eq!(response.status(), StatusCode::OK, "seed {seed}");
            let result = json(&response);
            assert_eq!(result["bad"], serde_json::json!([]), "seed {seed}");
            assert_eq!(result["checked"], CONVERSIONS_PER_REQUEST, "seed {seed}");
        }
    }
    // A script that changes the process-wide locale switches localeconv() back to its locked
    // path; formatting stays right for everyone after it.
    let locale = send(
        server.addr,
        Proto::Http1,
        Request::get("/locale.php").body(Full::default()).unwrap(),
    )
    .await;
    assert_eq!(locale.status(), StatusCode::OK);
    assert_eq!(common::text(&locale), "1234.50|1,234.50");
    let after = send(
        server.addr,
        Proto::Http1,
        Request::get("/floats.php?n=200&seed=7")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(json(&after)["bad"], serde_json::json!([]));
}

async fn futures_join_all<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.expect("the client task completes"));
    }
    out
}
