//! A soak: the real binary under a mix of hello, uploads, sessions, Server-Sent Events and PHP
//! errors from keep-alive HTTP/1.1 and h2c clients for `SOAK_SECONDS` (60 in `make test`, 600 in
//! `make soak`), then SIGTERM while they are busy. Every request sent gets its full, correct
//! answer (zero lost); the process exits 0 within `DRAIN_TIMEOUT_SECS`; its resident memory and
//! open file descriptors stay flat (the series is printed).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::process::{binary, Server};
use common::Proto;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

const CLIENTS_PER_PROTOCOL: usize = 3;
const DRAIN: Duration = Duration::from_secs(15);

fn soak_duration() -> Duration {
    let seconds = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(seconds)
}

/// One keep-alive connection, either protocol.
enum Connection {
    Http1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Connection {
    async fn open(addr: std::net::SocketAddr, proto: Proto) -> Result<Connection, String> {
        let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let io = TokioIo::new(stream);
        Ok(match proto {
            Proto::Http1 => {
                let (sender, conn) = hyper::client::conn::http1::handshake(io)
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                Connection::Http1(sender)
            }
            Proto::H2c => {
                let (sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                        .await
                        .map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                Connection::H2(sender)
            }
        })
    }

    async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<Response<Bytes>, String> {
        let response = match self {
            Connection::Http1(sender) => {
                sender.ready().await.map_err(|e| e.to_string())?;
                sender.send_request(request).await
            }
            Connection::H2(sender) => {
                sender.ready().await.map_err(|e| e.to_string())?;
                sender.send_request(request).await
            }
        }
        .map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Response::from_parts(parts, body))
    }
}

/// What one client does and checks, in turn.
#[derive(Debug, Clone, Copy)]
enum Step {
    Hello,
    Upload,
    Session,
    Events,
    FatalError,
    Exception,
}

const STEPS: [Step; 6] = [
    Step::Hello,
    Step::Upload,
    Step::Session,
    Step::Events,
    Step::FatalError,
    Step::Exception,
];

struct Client {
    addr: std::net::SocketAddr,
    proto: Proto,
    session_cookie: Option<String>,
    session_count: i64,
}

impl Client {
    fn request(&self, step: Step, n: u64) -> Request<Full<Bytes>> {
        let uri = match self.proto {
            Proto::Http1 => String::new(),
            Proto::H2c => format!("http://{}", self.addr),
        };
        let builder = Request::builder().header("host", self.addr.to_string());
        match step {
            Step::Hello => builder.uri(format!("{uri}/index.php")).body(Full::default()),
            Step::Upload => {
                let boundary = "soakboundary";
                let file = format!("{n}:").repeat(8 * 1024);
                let body = format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"n\"\r\n\r\n{n}\r\n\
                     --{boundary}\r\nContent-Disposition: form-data; name=\"files[]\"; filename=\"f.txt\"\r\n\
                     Content-Type: text/plain\r\n\r\n{file}\r\n--{boundary}--\r\n"
                );
                builder
                    .method("POST")
                    .uri(format!("{uri}/upload.php"))
                    .header("content-type", format!("multipart/form-data; boundary={boundary}"))
                    .body(Full::from(body))
            }
            Step::Session => {
                let builder = match &self.session_cookie {
                    Some(cookie) => builder.header("cookie", cookie.as_str()),
                    None => builder,
                };
                builder
                    .uri(format!("{uri}/session.php?action=increment"))
                    .body(Full::default())
            }
            Step::Events => builder
                .uri(format!("{uri}/sse.php"))
                .header("accept", "text/event-stream")
                .body(Full::default()),
            Step::FatalError => builder.uri(format!("{uri}/fatal.php")).body(Full::default()),
            Step::Exception => builder.uri(format!("{uri}/exception.php")).body(Full::default()),
        }
        .unwrap()
    }

    /// Whether `response` is the full, correct answer to `step`.
    fn check(&mut self, step: Step, n: u64, response: &Response<Bytes>) -> Result<(), String> {
        let body = String::from_utf8_lossy(response.body());
        let status = response.status();
        let ok = match step {
            Step::Hello => status == StatusCode::OK && body == "index of /index.php",
            Step::Upload => {
                let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                status == StatusCode::OK
                    && json["fields"]["n"].as_str().and_then(|v| v.parse().ok()) == Some(n)
                    && json["files"][0]["moved"] == true
                    && json["files"][0]["size"] == format!("{n}:").len() * 8 * 1024
            }
            Step::Session => {
                if let Some(cookie) = response.headers().get("set-cookie") {
                    let cookie = cookie.to_str().unwrap_or_default();
                    self.session_cookie = cookie.split(';').next().map(str::to_string);
                }
                let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                self.session_count += 1;
                status == StatusCode::OK && json["n"] == self.session_count
            }
            Step::Events => status == StatusCode::OK && body.matches("id: ").count() == 3,
            Step::FatalError | Step::Exception => status == StatusCode::INTERNAL_SERVER_ERROR,
        };
        if ok {
            Ok(())
        } else {
            Err(format!("{step:?} #{n}: {status} {body:.200}"))
        }
    }
}

#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    answered: AtomicU64,
    failures: std::sync::Mutex<Vec<String>>,
}

async fn run_client(
    addr: std::net::SocketAddr,
    proto: Proto,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let mut client = Client {
        addr,
        proto,
        session_cookie: None,
        session_count: 0,
    };
    let mut connection = match Connection::open(addr, proto).await {
        Ok(connection) => connection,
        Err(error) => {
            let failure = format!("{proto:?}: cannot connect: {error}");
            tally.failures.lock().unwrap().push(failure);
            return;
        }
    };
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let step = STEPS[(n as usize) % STEPS.len()];
        tally.sent.fetch_add(1, Ordering::Relaxed);
        let outcome = match connection.send(client.request(step, n)).await {
            Ok(response) => client.check(step, n, &response),
            Err(error) => Err(format!("{step:?} #{n}: {error}")),
        };
        n += 1;
        if let Err(failure) = outcome {
            // One failure fails the soak; this client stops rather than flood the report.
            let failure = format!("{proto:?} {failure}");
            tally.failures.lock().unwrap().push(failure);
            return;
        }
        tally.answered.fetch_add(1, Ordering::Relaxed);
    }
}

/// Resident memory (KiB) and open descriptors of a process, from /proc.
fn rss_and_fds(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    (rss, fds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_then_sigterm_loses_nothing_and_stays_flat() {
    let duration = soak_duration();
    let server = Server::start(
        binary()
            .env("PHP_WORKERS", "2")
            .env("DRAIN_TIMEOUT_SECS", DRAIN.as_secs().to_string())
            .env("REQUEST_TIMEOUT", "30s"),
    );
    let pid = server.child.id();
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut clients = Vec::new();
    for proto in [Proto::Http1, Proto::H2c] {
        for _ in 0..CLIENTS_PER_PROTOCOL {
            clients.push(tokio::spawn(run_client(
                server.addr,
                proto,
                stop.clone(),
                tally.clone(),
            )));
        }
    }

    let started = Instant::now();
    let interval = (duration / 12).max(Duration::from_secs(1));
    let mut series = Vec::new();
    // A failure ends the soak early (the clients stop at their first one).
    while started.elapsed() < duration && tally.failures.lock().unwrap().is_empty() {
        // The sampling interval: the soak's length is what is under test, not a wait for an event.
        tokio::time::sleep(interval.min(duration.saturating_sub(started.elapsed()))).await;
        let (rss, fds) = rss_and_fds(pid);
        series.push((
            started.elapsed().as_secs(),
            rss,
            fds,
            tally.answered.load(Ordering::Relaxed),
        ));
    }

    // SIGTERM while every client has a request in flight; they stop sending after it.
    stop.store(true, Ordering::SeqCst);
    let signalled = Instant::now();
    let status = server.terminate();
    let exited_after = signalled.elapsed();
    for client in clients {
        client.await.unwrap();
    }

    println!("  t(s)   rss(MiB)  fds  answered");
    for (t, rss, fds, answered) in &series {
        println!(
            "{t:>6} {:>10.1} {fds:>4} {answered:>9}",
            *rss as f64 / 1024.0
        );
    }
    let sent = tally.sent.load(Ordering::Relaxed);
    let answered = tally.answered.load(Ordering::Relaxed);
    println!("sent {sent}, answered {answered}, exit {status} {exited_after:?} after SIGTERM");

    let failures = tally.failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} lost or wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(sent, answered);
    assert!(status.success(), "exit status {status}");
    assert!(
        exited_after < DRAIN,
        "exited {exited_after:?} after SIGTERM"
    );

    // Flat: after the first quarter (OPcache, sessions and allocator warm-up), memory grows by
    // less than a quarter and descriptors vary only with the clients' connections.
    let settled: Vec<_> = series.iter().skip(series.len() / 4).collect();
    let (first_rss, last_rss) = (settled[0].1, settled[settled.len() - 1].1);
    assert!(
        last_rss <= first_rss + first_rss / 4,
        "RSS grew from {first_rss} KiB to {last_rss} KiB"
    );
    let fds: Vec<usize> = settled.iter().map(|s| s.2).collect();
    let spread = fds.iter().max().unwrap() - fds.iter().min().unwrap();
    assert!(
        spread <= 2 * CLIENTS_PER_PROTOCOL + 8,
        "descriptors {fds:?}"
    );
}
