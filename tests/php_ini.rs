//! php.ini settings through the binary's environment: PHP_INI_* directives reach PHP and win over
//! the server's defaults (the tracing JIT, on unless switched off), and OPcache preloading works.

mod common;

use common::process::{binary, Server};
use common::{json, Proto};

async fn get(server: &Server, path: &str) -> serde_json::Value {
    json(&server.get(Proto::Http1, path).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_ini_variables_reach_php_and_set_the_jit() {
    // On by default, with its buffer.
    let server = Server::start(&mut binary());
    let status = get(&server, "/preloaded.php").await;
    assert_eq!(status["jit_enabled"], true, "{status}");
    assert_eq!(status["jit_on"], true);
    // OPcache reports the usable part of the buffer, a few bytes short of the setting.
    let buffer = status["jit_buffer_size"].as_u64().unwrap();
    assert!((63 << 20..=64 << 20).contains(&buffer), "{buffer}");
    assert!(server.terminate().success());

    // Variables win over the defaults: off, or another buffer size.
    let server = Server::start(
        binary()
            .env("PHP_INI_OPCACHE__JIT", "off")
            .env("PHP_INI_MEMORY_LIMIT", "96M"),
    );
    let status = get(&server, "/preloaded.php").await;
    assert_eq!(status["jit_on"], false, "{status}");
    let limits = get(&server, "/limits.php").await;
    assert_eq!(limits["memory_limit"], "96M");
    assert!(server.terminate().success());

    let server = Server::start(binary().env("PHP_INI_OPCACHE__JIT_BUFFER_SIZE", "32M"));
    let status = get(&server, "/preloaded.php").await;
    assert_eq!(status["jit_on"], true, "{status}");
    let buffer = status["jit_buffer_size"].as_u64().unwrap();
    assert!((31 << 20..=32 << 20).contains(&buffer), "{buffer}");
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preloaded_functions_are_there_for_every_worker() {
    // As root, OPcache forks a child to preload and the server attaches the result.
    let preload = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("www/preload.php");
    let server = Server::start(
        binary()
            .env("PHP_WORKERS", "2")
            .env("PHP_INI_OPCACHE__PRELOAD", &preload)
            .env("PHP_INI_OPCACHE__PRELOAD_USER", "root"),
    );
    for _ in 0..4 {
        let status = get(&server, "/preloaded.php").await;
        assert_eq!(
            status["preloaded"], "Hello, test, from a preloaded function",
            "{status}"
        );
        assert_eq!(
            status["preload_statistics"],
            serde_json::json!(["tokio_php_preloaded_greeting"])
        );
    }
    assert!(server.terminate().success());
}
