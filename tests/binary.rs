//! The `tokio_php` binary as a user runs it: configuration from the environment, startup errors,
//! serving, and a clean exit on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{text, Proto, BOTH};
use http::StatusCode;

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tokio_php"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("DOCUMENT_ROOT", common::fixtures_root())
        .env("PHP_WORKERS", "2");
    command
}

/// Runs the binary expecting it to refuse to start; returns its stderr.
fn startup_error(variable: &str, value: &str) -> String {
    let output = binary()
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
        ("MAX_BODY_SIZE", "lots"),
        ("BODY_SPILL_THRESHOLD", "1T"),
        ("HEADER_READ_TIMEOUT", "soon"),
        ("DOCUMENT_ROOT", "/nonexistent/tokio_php/root"),
    ] {
        let stderr = startup_error(variable, value);
        assert!(stderr.contains(variable), "{variable}={value}: {stderr}");
    }
}

/// A running server process, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(command: &mut Command) -> Server {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the binary starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let log: serde_json::Value =
                    serde_json::from_str(&line).expect("log lines are JSON");
                if let Some(addr) = log["data"]["local_addr"].as_str() {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the server logs its address")
            .parse()
            .unwrap();
        Server { child, addr }
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        // SIGTERM through the kill command: no unsafe libc call in tests.
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the server exits after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_php_and_exits_cleanly_on_sigterm() {
    let server = Server::start(&mut binary());
    for proto in BOTH {
        let response = common::send(
            server.addr,
            proto,
            http::Request::get("/index.php")
                .body(Default::default())
                .unwrap(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(text(&response), "index of /index.php");
    }
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stub_answers_empty_200s_without_php() {
    let server = Server::start(binary().env("USE_STUB", "1"));
    for proto in [Proto::Http1, Proto::H2c] {
        let response = common::send(
            server.addr,
            proto,
            http::Request::get("/anything.php")
                .body(Default::default())
                .unwrap(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.body().is_empty());
    }
    assert!(server.terminate().success());
}
