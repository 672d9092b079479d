//! Running the real `tokio_php` binary as a user would, for tests that need a whole process
//! (environment configuration, signals, logs on stdout).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;

use super::Proto;

/// The server binary with a test environment: loopback on an ephemeral port, the fixtures, two
/// workers. Add variables to taste.
pub fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tokio_php"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("DOCUMENT_ROOT", super::fixtures_root())
        .env("PHP_WORKERS", "2");
    command
}

/// A running server process, killed on drop.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub internal: Option<SocketAddr>,
    logs: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl Server {
    pub fn start(command: &mut Command) -> Server {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the binary starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let collected = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let log: serde_json::Value =
                    serde_json::from_str(&line).expect("log lines are JSON");
                if let Some(addr) = log["data"]["local_addr"].as_str() {
                    let _ = tx.send((
                        log["data"]["server"].as_str().unwrap_or("").to_string(),
                        addr.to_string(),
                    ));
                }
                collected.lock().unwrap().push(log);
            }
        });
        let mut addrs = std::collections::HashMap::new();
        while !addrs.contains_key("http") {
            let (server, addr) = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("the server logs its address");
            addrs.insert(server, addr.parse::<SocketAddr>().unwrap());
        }
        let addr = addrs["http"];
        let wants_internal = command
            .get_envs()
            .any(|(k, v)| k == "INTERNAL_ADDR" && v.is_some_and(|v| !v.is_empty()));
        while wants_internal && !addrs.contains_key("internal") {
            let (server, addr) = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("the internal server logs its address");
            addrs.insert(server, addr.parse::<SocketAddr>().unwrap());
        }
        let internal = addrs.get("internal").copied();
        Server {
            child,
            addr,
            internal,
            logs,
        }
    }

    /// Waits (bounded) until `count` log lines of `log_type` were written; returns them.
    pub fn wait_for_logs(&self, log_type: &str, count: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines: Vec<_> = self
                .logs
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l["type"] == log_type)
                .cloned()
                .collect();
            if lines.len() >= count || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded) until a log line whose message contains `message` was written; returns it.
    pub fn wait_for_log_message(&self, message: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self
                .logs
                .lock()
                .unwrap()
                .iter()
                .find(|l| l["msg"].as_str().is_some_and(|m| m.contains(message)))
                .cloned();
            if let Some(line) = found {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no log line saying {message:?} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `GET path` on the public port, on a fresh connection.
    pub async fn get(&self, proto: Proto, path: &str) -> Response<Bytes> {
        super::get(self.addr, proto, path).await
    }

    /// `GET path` (HTTP/1.1) on the internal server; panics unless `INTERNAL_ADDR` was set.
    pub async fn internal_get(&self, path: &str) -> Response<Bytes> {
        let addr = self.internal.expect("INTERNAL_ADDR set");
        super::get(addr, Proto::Http1, path).await
    }

    /// The internal server's `/metrics` text.
    pub async fn metrics(&self) -> String {
        super::text(&self.internal_get("/metrics").await).to_string()
    }

    /// Polls the internal `/metrics` (bounded) until `condition` holds; returns the last scrape.
    pub async fn wait_for_metrics(&self, what: &str, condition: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let scraped = self.metrics().await;
            if condition(&scraped) {
                return scraped;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}:\n{scraped}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends SIGTERM and returns at once (the server drains); see [`Server::terminate`].
    pub fn sigterm(&self) {
        let status = send_sigterm(&self.child).expect("kill runs");
        assert!(status.success(), "kill -TERM {}: {status}", self.child.id());
    }

    pub fn terminate(mut self) -> std::process::ExitStatus {
        send_sigterm(&self.child).unwrap();
        wait_until(&mut self.child, Instant::now() + Duration::from_secs(30))
            .expect("the server exits after SIGTERM")
    }
}

/// Stops a peer the way its init script would: SIGTERM, so a master process (nginx, php-fpm)
/// takes its workers down with it, then SIGKILL if it is still there after `grace`. A SIGKILL
/// alone would leave the workers running, orphaned, after the test.
pub fn stop_peer(child: &mut Child, grace: Duration) {
    let _ = send_sigterm(child);
    if wait_until(child, Instant::now() + grace).is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// SIGTERM through the kill command, so that tests make no libc call of their own.
fn send_sigterm(child: &Child) -> std::io::Result<std::process::ExitStatus> {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
}

/// The child's exit status once it has exited, or `None` if it is still running at `deadline`.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<std::process::ExitStatus> {
    loop {
        // Never panics: stop_peer runs in Drop.
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
