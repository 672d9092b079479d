//! `/metrics` on the internal server, after real PHP traffic: every documented metric is there,
//! the numbers add up, and `promtool check metrics` accepts the output.

mod common;

use common::{metric, Proto, TestServer};
use tokio_php::admin::{self, InternalState};
use tokio_php::php::PoolConfig;
use tokio_php::server::{self, ServeConfig};
use tokio_php::stack::{self, StackConfig};
use tokio_php::telemetry::Metrics;

const DOCUMENTED: &[&str] = &[
    "tokio_php_uptime_seconds",
    "tokio_php_requests_per_second",
    "tokio_php_response_time_avg_seconds",
    "tokio_php_active_connections",
    "tokio_php_pending_requests",
    "tokio_php_dropped_requests",
    "tokio_php_requests_total{method=\"GET\"}",
    "tokio_php_responses_total{status=\"200\"}",
    "tokio_php_responses_total{status=\"404\"}",
    "tokio_php_responses_total{status=\"500\"}",
    "node_load1",
    "node_load5",
    "node_load15",
    "node_memory_MemTotal_bytes",
    "node_memory_MemAvailable_bytes",
    "node_memory_MemUsed_bytes",
    "tokio_php_memory_usage_percent",
    "tokio_php_request_duration_seconds_bucket",
    "tokio_php_php_workers_busy",
    "tokio_php_php_workers_idle",
    "tokio_php_rate_limited_requests_total",
    "tokio_php_timed_out_requests_total",
    "tokio_php_php_fatal_errors_total",
    "tokio_php_output_spool_bytes",
    "tokio_php_output_spool_files",
    "tokio_php_php_workers_replaced_total",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_cover_php_traffic_and_pass_promtool() {
    let metrics = Metrics::new();
    let serve_config = ServeConfig::default();
    let connections = serve_config.stats.clone();
    let stack_metrics = metrics.clone();
    let server = TestServer::serve_with(
        PoolConfig {
            workers: 2,
            ..PoolConfig::default()
        },
        serve_config,
        move |pool| {
            let config = StackConfig {
                metrics: stack_metrics,
                ..common::stack_config()
            };
            stack::build(&config, TestServer::php_service(pool)).unwrap()
        },
    )
    .await;
    let internal = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let internal_addr = internal.local_addr().unwrap();
    let state = InternalState {
        metrics,
        connections,
        pool: Some(server.pool.monitor()),
        config: serde_json::json!({}),
    };
    tokio::spawn(admin::serve_internal(
        internal,
        state,
        std::future::pending(),
    ));

    for path in [
        "/index.php",
        "/index.php",
        "/style.css",
        "/missing.php",
        "/fatal.php",
    ] {
        server.get(Proto::Http1, path).await;
    }
    let response = common::get(internal_addr, Proto::Http1, "/metrics").await;
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = String::from_utf8(response.body().to_vec()).unwrap();
    for name in DOCUMENTED {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
    assert_eq!(
        metric(&text, "tokio_php_requests_total{method=\"GET\"}"),
        5.0
    );
    assert_eq!(
        metric(&text, "tokio_php_responses_total{status=\"200\"}"),
        3.0
    );
    assert_eq!(metric(&text, "tokio_php_php_fatal_errors_total"), 1.0);
    assert_eq!(
        metric(&text, "tokio_php_request_duration_seconds_count"),
        5.0
    );
    assert_eq!(
        metric(&text, "tokio_php_php_workers_busy") + metric(&text, "tokio_php_php_workers_idle"),
        2.0
    );

    common::promtool_accepts(&text);
}
