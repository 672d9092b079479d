//! Shared helpers for the integration tests: one real PHP runtime per test binary, servers on
//! ephemeral loopback ports, and real HTTP/1.1 and h2c clients.
#![allow(dead_code)]

pub mod browser;
pub mod mariadb;
pub mod process;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_php::server::{self, ServeConfig};
use tokio_php::{
    http::{BodyLimits, DocumentRoot},
    php::{PhpPool, PhpRuntime, PhpRuntimeConfig, PhpService, PhpServiceConfig, PoolConfig},
    telemetry::PoolStats,
};

/// PHP starts once per process; every test shares it and starts its own pool.
pub fn php_runtime() -> &'static PhpRuntime {
    php_runtime_with(&[])
}

/// [`php_runtime`] with more php.ini directives; the first call in a test binary decides them.
pub fn php_runtime_with(extra_ini: &[(&str, &str)]) -> &'static PhpRuntime {
    static RUNTIME: OnceLock<PhpRuntime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        // Fixtures may be younger than OPcache's default 2 s protection window.
        let mut ini = vec![("opcache.file_update_protection".into(), "0".into())];
        ini.extend(
            extra_ini
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        PhpRuntime::start(PhpRuntimeConfig {
            ini,
            ..PhpRuntimeConfig::default()
        })
        .expect("PHP starts")
    })
}

/// The layer stack over the fixtures with every optional layer off; tests switch on what they
/// exercise with struct update syntax.
pub fn stack_config() -> tokio_php::stack::StackConfig {
    tokio_php::stack::StackConfig {
        document_root: Some(DocumentRoot::new(fixtures_root()).unwrap()),
        request_timeout: None,
        rate_limit: None,
        trusted_proxies: Default::default(),
        static_cache_ttl: None,
        index_file: None,
        worker: None,
        try_files: None,
        error_pages: None,
        profile: false,
        access_log: false,
        metrics: tokio_php::telemetry::Metrics::new(),
        otel: None,
    }
}

pub fn fixtures_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/www")
}

/// A running server with its own PHP pool.
pub struct TestServer {
    pub addr: SocketAddr,
    pub pool: PhpPool,
    stop: Option<oneshot::Sender<()>>,
}

impl TestServer {
    pub async fn start(pool: PoolConfig, body_limits: BodyLimits) -> TestServer {
        TestServer::serve(pool, |pool| {
            let config = PhpServiceConfig {
                body_limits,
                ..PhpServiceConfig::new(DocumentRoot::new(fixtures_root()).unwrap())
            };
            PhpService::new(pool, config)
        })
        .await
    }

    /// Serves whatever stack `make` builds around a pool.
    pub async fn serve<S, B>(pool: PoolConfig, make: impl FnOnce(&PhpPool) -> S) -> TestServer
    where
        S: tokio_php::http::HttpService<hyper::body::Incoming, B>,
        B: tokio_php::http::HttpBody,
    {
        TestServer::serve_with(pool, ServeConfig::default(), make).await
    }

    /// Like `serve`, with connection settings (TLS, limits).
    pub async fn serve_with<S, B>(
        pool: PoolConfig,
        serve_config: ServeConfig,
        make: impl FnOnce(&PhpPool) -> S,
    ) -> TestServer
    where
        S: tokio_php::http::HttpService<hyper::body::Incoming, B>,
        B: tokio_php::http::HttpBody,
    {
        php_runtime();
        let pool = PhpPool::start(pool).expect("pool starts");
        let service = make(&pool);
        let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(server::serve(listener, service, serve_config, async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            pool,
            stop: Some(stop),
        }
    }

    /// The plain PHP service over the fixtures, as `serve` callers usually want it.
    pub fn php_service(pool: &PhpPool) -> PhpService {
        PhpService::new(
            pool,
            PhpServiceConfig::new(DocumentRoot::new(fixtures_root()).unwrap()),
        )
    }

    /// The whole layer stack built from `config` around the PHP service, on `workers` workers.
    pub async fn with_stack(workers: usize, config: tokio_php::stack::StackConfig) -> TestServer {
        TestServer::serve(
            PoolConfig {
                workers,
                ..PoolConfig::default()
            },
            move |pool| {
                tokio_php::stack::build(&config, TestServer::php_service(pool))
                    .expect("the stack builds")
            },
        )
        .await
    }

    pub async fn with_workers(workers: usize) -> TestServer {
        TestServer::start(
            PoolConfig {
                workers,
                ..PoolConfig::default()
            },
            BodyLimits::default(),
        )
        .await
    }

    /// Waits (bounded) until the pool reaches a state.
    pub async fn wait_for(&self, what: &str, condition: impl Fn(PoolStats) -> bool) {
        // Generous: the machine may be busy with other test binaries and builds.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !condition(self.pool.stats()) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:?}",
                self.pool.stats()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until no worker runs a script and nothing is queued. A worker stays busy for a
    /// moment after its response has left (PHP's request shutdown), so "one busy worker" right
    /// after a request may still be that request, not the next one.
    pub async fn wait_until_idle(&self) {
        self.wait_for("an idle pool", |s| s.busy_workers == 0 && s.queued == 0)
            .await;
    }

    pub async fn get(&self, proto: Proto, path: &str) -> Response<Bytes> {
        get(self.addr, proto, path).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Runs the tests of one binary that take it one at a time: for tests whose load would keep
/// both cores busy while another watches a short window (tests/replicas.rs).
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// Waits (bounded by `limit`) until `condition` holds, checking every few milliseconds; panics
/// naming `what` when it never does.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        // The poll interval of a bounded wait, not a guess at how long something takes.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A program a test runs as its peer (nginx, php-fpm, promtool, chromium, …): its path, found on
/// PATH, in the sbin directories or in the tools cache `scripts/install-deps.sh` fills. A test
/// never skips without its peer: this panics, saying how to install it; `package` names what
/// provides it, e.g. `"Debian package nginx"`.
pub fn require_program(name: &str, package: &str) -> PathBuf {
    require_one_of(&[name], package)
}

/// [`require_program`] for a peer known under several names: the first one installed.
pub fn require_one_of(names: &[&str], package: &str) -> PathBuf {
    find_program(names).unwrap_or_else(|| {
        panic!(
            "{} is not installed (looked on PATH, in the sbin directories and in {}): \
             scripts/install-deps.sh installs it ({package})",
            names.join(" or "),
            tools_dir().map_or_else(|| "the tools cache".into(), |d| d.display().to_string()),
        )
    })
}

/// Where `scripts/install-deps.sh` puts the tools that are not Debian packages (hadolint).
fn tools_dir() -> Option<PathBuf> {
    let cache = std::env::var_os("TOKIO_PHP_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("tokio_php")))
        .or_else(|| std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/tokio_php")))?;
    Some(cache.join("tools/bin"))
}

fn find_program(names: &[&str]) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    // Debian puts daemons (mariadbd, php-fpm8.2, nginx) in sbin, often missing from a user's PATH.
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .chain(tools_dir())
        .collect();
    names.iter().find_map(|name| {
        dirs.iter().map(|dir| dir.join(name)).find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// `count` free loopback ports, found by binding them (and released on return, for a peer to
/// bind: another process could take one in between, which the peer then reports).
pub fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// One free loopback port, as [`free_ports`].
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// The value of an unlabelled series (or one with its labels spelled out) in Prometheus text.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Http1,
    H2c,
}

pub const BOTH: [Proto; 2] = [Proto::Http1, Proto::H2c];

/// `GET path` on a fresh connection, the whole response collected.
pub async fn get(addr: SocketAddr, proto: Proto, path: &str) -> Response<Bytes> {
    send(
        addr,
        proto,
        Request::get(path).body(Full::default()).unwrap(),
    )
    .await
}

/// Sends one request on a fresh connection and collects the whole response.
pub async fn send(
    addr: SocketAddr,
    proto: Proto,
    request: Request<Full<Bytes>>,
) -> Response<Bytes> {
    tokio::time::timeout(Duration::from_secs(30), send_inner(addr, proto, request))
        .await
        .expect("response within 30s")
}

/// The task driving a client connection, aborted (closing the connection) when the request
/// that owns it is dropped: a test that aborts a request's task makes its client leave, as a
/// browser closing its tab does. (A connection task left running would keep the socket open.)
struct ConnectionTask(tokio::task::AbortHandle);

impl ConnectionTask {
    fn spawn<F>(connection: F) -> ConnectionTask
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        ConnectionTask(tokio::spawn(connection).abort_handle())
    }
}

impl Drop for ConnectionTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn send_inner(
    addr: SocketAddr,
    proto: Proto,
    mut request: Request<Full<Bytes>>,
) -> Response<Bytes> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let io = TokioIo::new(stream);
    let _connection: ConnectionTask;
    let response = match proto {
        Proto::Http1 => {
            if !request.headers().contains_key(http::header::HOST) {
                request
                    .headers_mut()
                    .insert(http::header::HOST, addr.to_string().parse().unwrap());
            }
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            _connection = ConnectionTask::spawn(conn);
            sender.send_request(request).await.unwrap()
        }
        Proto::H2c => {
            let uri = format!("http://{addr}{}", request.uri().path_and_query().unwrap());
            *request.uri_mut() = uri.parse().unwrap();
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .unwrap();
            _connection = ConnectionTask::spawn(conn);
            sender.send_request(request).await.unwrap()
        }
    };
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Response::from_parts(parts, body)
}

/// Sends one HTTP/1.1 request on a fresh connection (from `source`, when given) and collects
/// the response; a failure is returned, not panicked on, so that a load loop can count it.
pub async fn exchange(
    addr: SocketAddr,
    source: Option<IpAddr>,
    request: Request<Full<Bytes>>,
) -> Result<Response<Bytes>, String> {
    let attempt = async {
        let stream = match source {
            None => TcpStream::connect(addr).await,
            Some(ip) => {
                let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
                socket
                    .bind(SocketAddr::new(ip, 0))
                    .map_err(|e| e.to_string())?;
                socket.connect(addr).await
            }
        }
        .map_err(|e| format!("connect to {addr}: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        let connection = tokio::spawn(connection);
        let result = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok(Response::from_parts(parts, body))
        }
        .await;
        connection.abort();
        result
    };
    tokio::time::timeout(Duration::from_secs(30), attempt)
        .await
        .unwrap_or_else(|_| Err(format!("no response from {addr} within 30 s")))
}

/// Writes raw bytes on a fresh connection and reads until the server closes it (or 5 s pass).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}

/// The status code of a raw HTTP/1.x response.
pub fn raw_status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

pub fn json(response: &Response<Bytes>) -> serde_json::Value {
    serde_json::from_slice(response.body()).unwrap_or_else(|e| {
        panic!(
            "status {}: body is not JSON ({e}): {}",
            response.status(),
            String::from_utf8_lossy(response.body())
        )
    })
}

pub fn text(response: &Response<Bytes>) -> &str {
    std::str::from_utf8(response.body()).unwrap()
}

/// How a response body ended, as the client saw it.
#[derive(Debug)]
pub enum BodyEnd {
    /// The body ended normally (HTTP/1.1 last chunk or full length, HTTP/2 END_STREAM).
    Complete,
    /// The body broke off: an HTTP/1.1 connection closed early or an HTTP/2 stream reset.
    Broken(String),
}

/// Sends one GET on a fresh connection with hyper's client and reads the body until it ends or
/// breaks off, keeping what arrived (a truncated body is a result here, not a failure).
pub async fn get_until_end(
    addr: SocketAddr,
    proto: Proto,
    path: &str,
) -> (http::response::Parts, Bytes, BodyEnd) {
    let request = Request::get(path).body(Full::default()).unwrap();
    send_until_end(addr, proto, request).await
}

/// [`get_until_end`] for any request.
pub async fn send_until_end(
    addr: SocketAddr,
    proto: Proto,
    mut request: Request<Full<Bytes>>,
) -> (http::response::Parts, Bytes, BodyEnd) {
    tokio::time::timeout(Duration::from_secs(30), async {
        let stream = TcpStream::connect(addr).await.unwrap();
        let io = TokioIo::new(stream);
        let _connection: ConnectionTask;
        let response = match proto {
            Proto::Http1 => {
                let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
                _connection = ConnectionTask::spawn(conn);
                request
                    .headers_mut()
                    .insert(http::header::HOST, addr.to_string().parse().unwrap());
                sender.send_request(request).await.unwrap()
            }
            Proto::H2c => {
                let (mut sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                        .await
                        .unwrap();
                _connection = ConnectionTask::spawn(conn);
                let uri = format!("http://{addr}{}", request.uri().path_and_query().unwrap());
                *request.uri_mut() = uri.parse().unwrap();
                sender.send_request(request).await.unwrap()
            }
        };
        let (parts, mut body) = response.into_parts();
        let mut received = Vec::new();
        let end = loop {
            match body.frame().await {
                None => break BodyEnd::Complete,
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        received.extend_from_slice(data);
                    }
                }
                Some(Err(error)) => break BodyEnd::Broken(format!("{error:?}")),
            }
        };
        (parts, Bytes::from(received), end)
    })
    .await
    .expect("the body ends or breaks off within 30s")
}

/// Writes a raw HTTP/1.1 request on a fresh connection and reads until the server closes it.
/// Returns the bytes read and whether the server closed the connection within `limit` (a
/// keep-alive connection the server leaves open is cut off at `limit`).
pub async fn raw_until_closed(
    addr: SocketAddr,
    request: &[u8],
    limit: Duration,
) -> (Vec<u8>, bool) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut response = Vec::new();
    let closed = tokio::time::timeout(limit, async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => response.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (response, closed)
}

/// An HTTP/2 (h2c) connection through the `h2` crate, for what hyper's client hides: stream
/// resets with their reason, and flow-control windows chosen by the test.
pub struct H2Client {
    pub sender: h2::client::SendRequest<Bytes>,
    /// Sets the connection's INITIAL_WINDOW_SIZE (applies to open streams too).
    pub set_window: tokio::sync::mpsc::UnboundedSender<u32>,
}

impl H2Client {
    /// Connects with `window` as every stream's initial receive window (0: the server can send
    /// no body byte until the window is raised).
    pub async fn connect(addr: SocketAddr, window: u32) -> H2Client {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (sender, mut connection) = h2::client::Builder::new()
            .initial_window_size(window)
            .handshake::<_, Bytes>(tcp)
            .await
            .unwrap();
        let (set_window, mut windows) = tokio::sync::mpsc::unbounded_channel::<u32>();
        tokio::spawn(async move {
            let mut windows_open = true;
            loop {
                tokio::select! {
                    result = &mut connection => { let _ = result; return; }
                    window = windows.recv(), if windows_open => match window {
                        Some(window) => {
                            connection.set_target_window_size(window);
                            let _ = connection.set_initial_window_size(window);
                        }
                        None => windows_open = false,
                    },
                }
            }
        });
        H2Client { sender, set_window }
    }

    /// Sends a GET and waits for the response head.
    pub async fn get(&mut self, addr: SocketAddr, path: &str) -> http::Response<h2::RecvStream> {
        let request = Request::get(format!("http://{addr}{path}"))
            .body(())
            .unwrap();
        let mut sender = self.sender.clone().ready().await.unwrap();
        let (response, _) = sender.send_request(request, true).unwrap();
        tokio::time::timeout(Duration::from_secs(30), response)
            .await
            .expect("a response head within 30s")
            .unwrap()
    }
}

/// Reads an h2 body to its end or its reset, releasing flow-control capacity as it goes.
pub async fn read_h2_body(body: &mut h2::RecvStream) -> (Vec<u8>, Result<(), h2::Error>) {
    let mut received = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), body.data())
            .await
            .expect("body data within 30s")
        {
            None => return (received, Ok(())),
            Some(Ok(data)) => {
                let _ = body.flow_control().release_capacity(data.len());
                received.extend_from_slice(&data);
            }
            Some(Err(error)) => return (received, Err(error)),
        }
    }
}

/// Runs a command to completion with captured output, killing it past `limit`.
pub fn run_bounded(command: &mut std::process::Command, limit: Duration) -> std::process::Output {
    let mut child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    // Read both pipes on threads so a chatty command cannot block on a full pipe.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut buf);
        buf
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    std::process::Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// `promtool check metrics` (Prometheus's own parser and linter) accepts `text`. promtool exits
/// 1 when it cannot parse the exposition and 3 when it only has lint remarks; the one remark
/// allowed is about the `node_memory_*` names, which keep node_exporter's spelling (camelCase)
/// so existing dashboards work.
pub fn promtool_accepts(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};

    let mut promtool = Command::new(require_program("promtool", "Debian package prometheus"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    let problems = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    let only_node_names = problems
        .lines()
        .filter(|l| !l.trim().is_empty())
        .all(|l| l.starts_with("node_memory_Mem") && l.contains("snake_case"));
    assert!(
        output.status.success() || (output.status.code() == Some(3) && only_node_names),
        "promtool check metrics ({:?}):\n{problems}\n{text}",
        output.status.code()
    );
}
