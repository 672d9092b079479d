//! php.ini settings through the binary's environment: PHP_INI_* directives reach PHP, the JIT can
//! be switched on, and preloading works where PHP supports it (8.3+) or is refused clearly.

mod common;

use common::process::{binary, Server};
use common::{json, Proto};

async fn get(server: &Server, path: &str) -> serde_json::Value {
    json(
        &common::send(
            server.addr,
            Proto::Http1,
            http::Request::get(path).body(Default::default()).unwrap(),
        )
        .await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_ini_variables_turn_the_jit_on() {
    let server = Server::start(
        binary()
            .env("PHP_INI_OPCACHE__JIT", "tracing")
            .env("PHP_INI_OPCACHE__JIT_BUFFER_SIZE", "32M")
            .env("PHP_INI_MEMORY_LIMIT", "96M"),
    );
    let status = get(&server, "/preloaded.php").await;
    assert_eq!(status["jit_enabled"], true, "{status}");
    assert_eq!(status["jit_on"], true);
    assert!(status["jit_buffer_size"].as_u64().unwrap() > 30 << 20);
    let limits = get(&server, "/limits.php").await;
    assert_eq!(limits["memory_limit"], "96M");
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preloading_works_or_is_refused_with_a_reason() {
    let preload = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("www/preload.php");
    let mut command = binary();
    command
        .env("PHP_INI_OPCACHE__PRELOAD", &preload)
        .env("PHP_INI_OPCACHE__PRELOAD_USER", "root");
    let version = tokio_php::php::version();
    let minor: u32 = version.split('.').nth(1).unwrap().parse().unwrap();
    if minor >= 3 {
        let server = Server::start(&mut command);
        let status = get(&server, "/preloaded.php").await;
        assert_eq!(
            status["preloaded"],
            "Hello, test, from a preloaded function"
        );
        assert!(server.terminate().success());
    } else {
        let output = command.output().unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("opcache.preload needs PHP 8.3"),
            "PHP {version}: {stderr}"
        );
    }
}
