//! The examples run as programs, not only compile: `embed_in_axum` answers from axum and, under
//! `/php`, from PHP with the client's address; `stub_server` answers every request with an empty
//! 200 through its layers. Both stop cleanly on SIGTERM.
//!
//! `make test` builds the examples as programs (`cargo build --examples`) before it runs the
//! tests; run alone, this test says to build them first.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::process::Server;
use common::Proto;

/// The example's binary, next to this test's in the target directory.
fn example(name: &str) -> Command {
    let deps = std::env::current_exe().unwrap();
    let path: PathBuf = deps
        .parent()
        .and_then(|dir| dir.parent())
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.is_file(),
        "{} is not built: `cargo build --examples` (which `make test` runs) builds it",
        path.display()
    );
    let mut command = Command::new(path);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "info");
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_in_axum_serves_axum_routes_and_php_under_its_prefix() {
    let server =
        Server::start(example("embed_in_axum").env("DOCUMENT_ROOT", common::fixtures_root()));
    let axum = server.get(Proto::Http1, "/").await;
    assert_eq!(axum.status(), 200);
    assert!(common::text(&axum).starts_with("Hello from axum"));

    let php = common::json(&server.get(Proto::Http1, "/php/server.php?x=1").await);
    assert_eq!(php["SCRIPT_NAME"], "/server.php", "{php}");
    assert_eq!(php["QUERY_STRING"], "x=1", "{php}");
    assert_eq!(php["REMOTE_ADDR"], "127.0.0.1", "{php}");
    assert_eq!(php["SERVER_PORT"], server.addr.port().to_string(), "{php}");

    assert_eq!(
        server.get(Proto::Http1, "/php/missing.php").await.status(),
        404
    );
    assert_eq!(server.get(Proto::Http1, "/elsewhere").await.status(), 404);
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stub_server_answers_without_php() {
    let server = Server::start(&mut example("stub_server"));
    for path in ["/", "/index.php", "/anything"] {
        let response = server.get(Proto::Http1, path).await;
        assert_eq!(response.status(), 200, "{path}");
        assert!(response.body().is_empty());
        assert!(response.headers().contains_key("x-request-id"));
    }
    assert!(server.terminate().success());
}
