//! JIT code outlives the worker thread that compiled it. OPcache's tracing JIT (switched on
//! here) compiles calls to internal functions by the address of the compiling thread's copy; when that
//! thread exits — a worker retired after an unrecoverable error, or a pool shut down while another
//! serves in the same process — the other threads keep running the compiled code. Our PHP build
//! keeps the copies (scripts/php-patches/0004); without it the second pool below crashes the
//! process.

mod common;

use std::time::Duration;

use common::{Proto, TestServer};
use http::StatusCode;

async fn run_hot_code(server: &TestServer, times: usize) {
    for round in 0..times {
        let response = server.get(Proto::Http1, "/hot_notices.php").await;
        assert_eq!(response.status(), StatusCode::OK, "round {round}");
        assert!(common::text(&response).starts_with("done on worker"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jit_code_compiled_by_exited_threads_keeps_working() {
    common::php_runtime_with(&[
        ("opcache.jit", "tracing"),
        ("opcache.jit_buffer_size", "64M"),
    ]);
    for generation in 0..2 {
        // A pool whose threads compile the hot code, then exit with it.
        let first = TestServer::with_workers(2).await;
        run_hot_code(&first, 20).await;
        let stopped = first.pool.shutdown(Duration::from_secs(30));
        assert!(
            stopped,
            "generation {generation}: the first pool's threads exit"
        );
        // Another pool runs the code the exited threads compiled.
        let second = TestServer::with_workers(2).await;
        run_hot_code(&second, 20).await;
    }
}
