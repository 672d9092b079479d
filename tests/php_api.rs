//! What PHP scripts get from tokio_php beyond FPM's API: the tokio_* functions,
//! fastcgi_finish_request(), OPcache really on, and opcache_reset() made harmless.

mod common;

use common::{json, Proto, TestServer, BOTH};
use http::StatusCode;
use tokio_php::php::PoolConfig;
use tokio_php::stack;

async fn server(workers: usize) -> TestServer {
    TestServer::with_stack(workers, common::stack_config()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_pool_reports_its_own_size() {
    // Two pools in one process (the server's own and, say, an admin pool): starting the second
    // must not change what the first one's scripts see, nor free what they may be reading.
    let sized = |workers, queue_capacity| PoolConfig {
        workers,
        queue_capacity,
        ..PoolConfig::default()
    };
    let serve = |config| {
        TestServer::serve(config, |pool| {
            stack::build(&common::stack_config(), TestServer::php_service(pool)).unwrap()
        })
    };
    let first = serve(sized(1, 7)).await;
    let second = serve(sized(2, 9)).await;
    for (server, workers, queue_capacity) in [(&first, 1, 7), (&second, 2, 9), (&first, 1, 7)] {
        let info = json(&server.get(Proto::Http1, "/api.php").await)["server_info"].clone();
        assert_eq!(info["workers"], workers, "{info}");
        assert_eq!(info["queue_capacity"], queue_capacity, "{info}");
        assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tokio_functions_report_the_request_and_the_server() {
    let server = server(2).await;
    for proto in BOTH {
        let response = server.get(proto, "/api.php").await;
        let api = json(&response);
        assert_eq!(
            api["request_id"],
            response.headers()["x-request-id"].to_str().unwrap(),
            "{proto:?}"
        );
        let worker = api["worker_id"].as_i64().unwrap();
        assert!((0..2).contains(&worker));
        let info = &api["server_info"];
        assert_eq!(info["server"], "tokio_php");
        assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(info["sapi"], "cli-server");
        assert_eq!(info["zts"], true);
        assert_eq!(info["workers"], 2);
        assert_eq!(info["queue_capacity"], 200);
        assert!(info["php_version"].as_str().unwrap().starts_with("8."));
        assert_eq!(info["build"], tokio_php::BUILD);
        assert_eq!(api["build_version"], tokio_php::BUILD);
        for (name, returns, params) in [
            ("tokio_request_id", "string", 0),
            ("tokio_worker_id", "int", 0),
            ("tokio_server_info", "array", 0),
            ("tokio_request_heartbeat", "bool", 1),
            ("tokio_finish_request", "bool", 0),
            ("fastcgi_finish_request", "bool", 0),
        ] {
            let function = &api["functions"][name];
            assert_eq!(function["exists"], true, "{name}");
            assert_eq!(function["return"], returns, "{name}");
            assert_eq!(function["params"], params, "{name}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fastcgi_finish_request_answers_early_and_the_script_goes_on() {
    let server = server(1).await;
    for proto in BOTH {
        let token = format!("p{}{:?}", std::process::id(), proto).to_lowercase();
        let marker = std::env::temp_dir().join(format!("tokio_php_finish_{token}"));
        let _ = std::fs::remove_file(&marker);
        let response = server
            .get(proto, &format!("/finish.php?ms=400&token={token}"))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            common::text(&response),
            "answered early",
            "{proto:?}: later output discarded"
        );
        assert_eq!(response.headers()["x-before"], "yes");
        assert!(
            response.headers().get("x-after").is_none(),
            "later headers discarded"
        );
        assert!(
            !marker.exists(),
            "the response came before the script ended"
        );
        assert_eq!(
            server.pool.stats().busy_workers,
            1,
            "the worker is busy until the script ends"
        );

        // The worker is free once the script has ended, its marker written in full.
        server
            .wait_for("the script to end and free its worker", |s| {
                s.busy_workers == 0
            })
            .await;
        assert!(marker.exists(), "the script finished its work");
        let result: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&marker).unwrap()).unwrap();
        assert_eq!(result["first"], true);
        assert_eq!(
            result["second"], false,
            "a second call does nothing, as under php-fpm"
        );
        assert_eq!(result["aborted"], 0);
        std::fs::remove_file(&marker).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opcache_and_its_jit_are_on_and_opcache_reset_cannot_clear_it() {
    let server = server(2).await;
    let mut hits = Vec::new();
    for _ in 0..4 {
        let status = json(&server.get(Proto::Http1, "/opcache.php").await);
        assert_eq!(status["enabled"], true, "{status}");
        assert_eq!(status["sapi"], "cli-server");
        assert_eq!(status["jit"], true, "the tracing JIT is on by default");
        assert_eq!(status["jit_mode"], "tracing");
        hits.push(status["hits"].as_u64().unwrap());
    }
    assert!(hits.windows(2).all(|w| w[1] > w[0]), "hits grow: {hits:?}");

    let reset = json(&server.get(Proto::Http1, "/opcache.php?reset=1").await);
    assert_eq!(reset["reset"], false, "opcache_reset() is refused");
    let after = json(&server.get(Proto::Http1, "/opcache.php").await);
    assert!(
        after["hits"].as_u64().unwrap() > *hits.last().unwrap(),
        "the cache survived: {after}"
    );
    assert!(after["cached_scripts"].as_u64().unwrap() >= 1);
}
