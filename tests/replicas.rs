//! Several replicas behind a real load balancer, with their sessions in a real Redis: what a
//! horizontally scaled deployment relies on.
//!
//! Every test starts its own cluster on 127.0.0.1, on ports it picks: a private `redis-server`
//! (no persistence), three `tokio_php` processes over `tests/fixtures/replicas` with
//! `session.save_handler=redis` (phpredis, built into our PHP by `scripts/build-php.sh`, with
//! session locking on) and `TRUSTED_PROXIES=127.0.0.2`, and nginx in front of them: round robin,
//! no upstream keepalive, `proxy_bind 127.0.0.2` (the replicas see the balancer as the trusted
//! 127.0.0.2, while the test's client connects from 127.0.0.1, which is not trusted), the
//! compose file's balancer settings (`docker/nginx-proxy.conf`: `X-Forwarded-For` / `-Proto`,
//! `proxy_next_upstream error timeout http_502 http_503`) and an `X-Upstream` response header
//! naming the replica (or replicas, on a retry) that answered.
//!
//! Proven here:
//! - a login on one replica is seen by the others, and `REMOTE_ADDR` is the client's address
//!   through the balancer but never one a client wrote itself;
//! - phpredis's session lock serialises one session's concurrent requests across replicas (and
//!   without it, updates are lost: the test is sensitive);
//! - a rolling restart (SIGTERM, drain, restart, health, one replica at a time) under load loses
//!   no request and no session;
//! - a SIGKILLed replica costs only its in-flight requests: POSTs get 502 and are not retried
//!   elsewhere, idempotent GETs are retried on another replica (so they run twice: applications
//!   must make GETs safe to repeat), and the others keep serving;
//! - Redis going away turns session pages into 500s with a log line naming the failure, pages
//!   without a session keep working, and sessions work again once Redis is back.
//!
//! nginx takes a replica whose connection was refused out of rotation for `fail_timeout=1s`
//! (its default is 10 s), so a restarted replica gets requests again soon; a refused connection
//! is passed to the next replica even for a POST (nothing was sent yet), which is why a drain
//! (listener closed first) loses nothing, while a POST already sent to a replica that dies is
//! answered 502 and never re-sent.
//!
//! The tests take [`common::one_at_a_time`]: run side by side they also pass (in about 8 s instead
//! of 14 s), but the rolling restart's load keeps both cores busy while the SIGKILL tests watch
//! a two-second window, so they run one after the other. redis-server and nginx must be
//! installed (`scripts/install-deps.sh`); a missing one fails the test with the install hint.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::process::{binary, Server};
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const REPLICAS: usize = 3;
/// The balancer's source address for its upstream connections, the replicas' trusted proxy.
const BALANCER_IP: &str = "127.0.0.2";
/// What a client writes in `X-Forwarded-For` to pass for someone else.
const SPOOFED: &str = "203.0.113.66";

/// Ports of one replica; a restarted replica gets the same ones.
#[derive(Clone, Copy)]
struct ReplicaPorts {
    http: u16,
    internal: u16,
}

/// Redis, three replicas and nginx, all stopped when dropped (also after a failed assertion).
struct Cluster {
    nginx: Option<Child>,
    replicas: Vec<Option<Server>>,
    /// Replicas stopped by a rolling restart, kept for their logs.
    retired: Vec<Server>,
    redis: Option<Child>,
    redis_port: u16,
    ports: Vec<ReplicaPorts>,
    balancer: SocketAddr,
    /// More environment for every replica (e.g. session locking off).
    extra_env: Vec<(String, String)>,
    dir: tempfile::TempDir,
}

impl Cluster {
    async fn start(extra_env: &[(&str, &str)]) -> Cluster {
        let redis_server = common::require_program("redis-server", "Debian package redis-server");
        let nginx = common::require_program("nginx", "Debian package nginx");
        let dir = tempfile::Builder::new()
            .prefix("tokio_php-replicas.")
            .tempdir()
            .unwrap();
        let ports = common::free_ports(2 + 2 * REPLICAS);
        let mut cluster = Cluster {
            nginx: None,
            replicas: Vec::new(),
            retired: Vec::new(),
            redis: None,
            redis_port: ports[0],
            ports: (0..REPLICAS)
                .map(|i| ReplicaPorts {
                    http: ports[2 + 2 * i],
                    internal: ports[3 + 2 * i],
                })
                .collect(),
            balancer: SocketAddr::from(([127, 0, 0, 1], ports[1])),
            extra_env: extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            dir,
        };
        cluster.start_redis(&redis_server).await;
        for i in 0..REPLICAS {
            let server = tokio::task::block_in_place(|| Server::start(&mut cluster.command(i)));
            cluster.replicas.push(Some(server));
        }
        for i in 0..REPLICAS {
            cluster.wait_healthy(i).await;
        }
        cluster.start_nginx(&nginx);
        cluster
    }

    /// A private redis-server on the cluster's port (again on the same port after a kill).
    async fn start_redis(&mut self, program: &Path) {
        let log = self.dir.path().join("redis.log");
        let child = Command::new(program)
            .args(["--port", &self.redis_port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--dir"])
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        self.redis = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.redis.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "redis-server exited during startup ({status}); its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if redis(self.redis_port, &["PING"]).await == Ok(Some("PONG".into())) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING within 10 s; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Kills Redis (it has no persistence: every session is gone).
    fn kill_redis(&mut self) {
        if let Some(mut redis) = self.redis.take() {
            let _ = redis.kill();
            let _ = redis.wait();
        }
    }

    /// The command that starts replica `i` (the same ports every time).
    fn command(&self, i: usize) -> Command {
        let ports = self.ports[i];
        let mut command = binary();
        command
            .env("LISTEN_ADDR", format!("127.0.0.1:{}", ports.http))
            .env("INTERNAL_ADDR", format!("127.0.0.1:{}", ports.internal))
            .env("DOCUMENT_ROOT", fixtures())
            .env("PHP_WORKERS", "2")
            .env("PHP_INI_SESSION__SAVE_HANDLER", "redis")
            .env(
                "PHP_INI_SESSION__SAVE_PATH",
                format!("tcp://127.0.0.1:{}", self.redis_port),
            )
            .env("TRUSTED_PROXIES", BALANCER_IP)
            .env("DRAIN_TIMEOUT_SECS", "10")
            .env("ACCESS_LOG", "1");
        for (key, value) in &self.extra_env {
            command.env(key, value);
        }
        command
    }

    fn start_nginx(&mut self, program: &Path) {
        let run = self.dir.path();
        let upstreams: String = self
            .ports
            .iter()
            // A refused connection takes a replica out for a second (nginx's default is 10 s),
            // so a restarted replica is back in rotation soon.
            .map(|p| {
                format!(
                    "    server 127.0.0.1:{} max_fails=1 fail_timeout=1s;\n",
                    p.http
                )
            })
            .collect();
        std::fs::write(
            run.join("nginx.conf"),
            format!(
                "daemon off;\nmaster_process on;\nworker_processes 1;\npid {run}/nginx.pid;\n\
                 error_log {run}/nginx-error.log;\nuser root;\n\
                 events {{\n  worker_connections 1024;\n}}\n\
                 http {{\n  \
                 log_format upstreams '$request $status upstream=$upstream_addr $upstream_status';\n  \
                 access_log {run}/nginx-access.log upstreams;\n  \
                 client_body_temp_path {run}/body;\n  proxy_temp_path {run}/proxy;\n  \
                 fastcgi_temp_path {run}/fcgi;\n  uwsgi_temp_path {run}/uwsgi;\n  \
                 scgi_temp_path {run}/scgi;\n  \
                 upstream replicas {{\n{upstreams}  }}\n  \
                 server {{\n    listen 127.0.0.1:{port};\n    server_name replicas.test;\n    \
                 location / {{\n      \
                 proxy_pass http://replicas;\n      \
                 include {proxy_settings};\n      \
                 proxy_bind {BALANCER_IP};\n      \
                 add_header X-Upstream $upstream_addr always;\n    \
                 }}\n  }}\n}}\n",
                run = run.display(),
                port = self.balancer.port(),
                // The settings the compose file's balancer uses.
                proxy_settings = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("docker/nginx-proxy.conf")
                    .display(),
            ),
        )
        .unwrap();
        let child = Command::new(program)
            .arg("-c")
            .arg(run.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        self.nginx = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(self.balancer).is_err() {
            let exited = self.nginx.as_mut().unwrap().try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "nginx did not start listening ({exited:?}); its log:\n{}",
                self.nginx_error_log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn nginx_error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nginx-error.log")).unwrap_or_default()
    }

    fn replica(&self, i: usize) -> &Server {
        self.replicas[i].as_ref().expect("the replica is running")
    }

    /// `127.0.0.1:port` of replica `i`, as nginx writes it in `X-Upstream`.
    fn upstream_name(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.ports[i].http)
    }

    fn replica_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[i].http))
    }

    /// Waits (bounded) until replica `i`'s internal `/health` answers 200.
    async fn wait_healthy(&self, i: usize) {
        let internal = SocketAddr::from(([127, 0, 0, 1], self.ports[i].internal));
        common::wait_until(
            &format!("replica {i}'s /health to answer 200"),
            Duration::from_secs(20),
            || async move {
                matches!(
                    common::exchange(internal, None, get("/health", None, &[])).await,
                    Ok(r) if r.status() == StatusCode::OK
                )
            },
        )
        .await;
    }

    /// SIGTERMs replica `i` while a slow POST runs on it, waits for its drain and its successful
    /// exit (the POST answered), starts it again on the same ports and waits until it is healthy
    /// and nginx sends it requests again.
    async fn rolling_restart(&mut self, i: usize) {
        // A request in flight on the replica when SIGTERM arrives (sent to it directly, so that
        // it surely is on this one): the drain lets it finish.
        let id = format!("drain-{i}-{}", self.retired.len());
        let addr = self.replica_addr(i);
        let form = format!("id={id}");
        let in_flight = tokio::spawn(async move {
            common::exchange(addr, None, post_form("/slow.php?ms=500", None, &form)).await
        });
        common::wait_until(
            &format!("the slow POST {id} to run"),
            Duration::from_secs(10),
            || async { self.executions(&id).await == 1 },
        )
        .await;
        let mut old = self.replicas[i].take().expect("the replica is running");
        let started = Instant::now();
        old.sigterm();
        tokio::task::block_in_place(|| old.wait_for_log_message("draining open connections"));
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(status) = old.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "replica {i} still running 15 s after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(status.success(), "replica {i} exited with {status}");
        let exited = started.elapsed();
        let response = in_flight
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("the POST in flight during the drain: {e}"));
        assert_eq!(response.status(), StatusCode::OK, "{response:?}");
        assert_eq!(common::json(&response)["runs"], 1);
        assert_eq!(self.executions(&id).await, 1);
        self.retired.push(old);
        let server = tokio::task::block_in_place(|| Server::start(&mut self.command(i)));
        self.replicas[i] = Some(server);
        self.wait_healthy(i).await;
        // Back in rotation: nginx (which took it out for `fail_timeout` after a refused
        // connection) sends it requests again before the next replica goes down.
        let internal = SocketAddr::from(([127, 0, 0, 1], self.ports[i].internal));
        common::wait_until(
            &format!("nginx to send requests to the restarted replica {i}"),
            Duration::from_secs(10),
            || async move {
                common::exchange(internal, None, get("/health", None, &[]))
                    .await
                    .ok()
                    .and_then(|r| serde_json::from_slice::<serde_json::Value>(r.body()).ok())
                    .and_then(|health| health["total_requests"].as_u64())
                    .is_some_and(|n| n > 0)
            },
        )
        .await;
        println!(
            "replica {i} drained (its POST in flight answered 200) and exited ({status}) \
             {exited:.2?} after SIGTERM, back in rotation {:.2?} after it",
            started.elapsed()
        );
    }

    /// SIGKILLs replica `i`: no drain, its connections close mid-request.
    fn sigkill(&mut self, i: usize) {
        let mut server = self.replicas[i].take().expect("the replica is running");
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        self.retired.push(server);
    }

    /// Busy PHP workers of replica `i`.
    async fn busy_workers(&self, i: usize) -> f64 {
        common::metric(
            &self.replica(i).metrics().await,
            "tokio_php_php_workers_busy",
        )
    }

    /// How often the slow page ran with `id` (from its counter in Redis).
    async fn executions(&self, id: &str) -> u64 {
        redis(self.redis_port, &["GET", &format!("exec:{id}")])
            .await
            .expect("Redis answers")
            .map_or(0, |n| n.parse().unwrap())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(nginx) = self.nginx.as_mut() {
            // SIGTERM first: the master takes its worker down with it.
            common::process::stop_peer(nginx, Duration::from_secs(10));
        }
        // Server's own Drop kills each replica.
        self.replicas.clear();
        self.kill_redis();
    }
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/replicas")
}

/// One command to Redis in RESP on a fresh connection: `Ok(None)` for a nil reply, `Err` for an
/// error reply or no connection. Arrays are not needed here and not parsed.
async fn redis(port: u16, args: &[&str]) -> Result<Option<String>, String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        let mut command = format!("*{}\r\n", args.len());
        for arg in args {
            command.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream
            .write_all(command.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        let line = line.trim_end();
        let (kind, rest) = line.split_at(line.len().min(1));
        match kind {
            "+" | ":" => Ok(Some(rest.to_string())),
            "-" => Err(rest.to_string()),
            "$" if rest == "-1" => Ok(None),
            "$" => {
                let len: usize = rest.parse().map_err(|_| format!("bad reply {line:?}"))?;
                let mut value = vec![0; len + 2];
                reader
                    .read_exact(&mut value)
                    .await
                    .map_err(|e| e.to_string())?;
                value.truncate(len);
                Ok(Some(String::from_utf8_lossy(&value).into_owned()))
            }
            _ => Err(format!("unexpected reply {line:?}")),
        }
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .unwrap_or_else(|_| Err("no reply within 5 s".into()))
}

fn get(path: &str, session: Option<&str>, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    request("GET", path, session, headers, Bytes::new())
}

fn post_form(path: &str, session: Option<&str>, form: &str) -> Request<Full<Bytes>> {
    let headers = [("content-type", "application/x-www-form-urlencoded")];
    request(
        "POST",
        path,
        session,
        &headers,
        Bytes::from(form.to_string()),
    )
}

fn request(
    method: &str,
    path: &str,
    session: Option<&str>,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Request<Full<Bytes>> {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "replicas.test");
    if let Some(id) = session {
        request = request.header(header::COOKIE, format!("PHPSESSID={id}"));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Full::new(body)).unwrap()
}

/// [`common::exchange`] for requests that must work.
async fn send(addr: SocketAddr, request: Request<Full<Bytes>>) -> Response<Bytes> {
    let description = format!("{} {}", request.method(), request.uri());
    common::exchange(addr, None, request)
        .await
        .unwrap_or_else(|e| panic!("{description} to {addr}: {e}"))
}

/// The replica(s) nginx passed the request to, in order.
fn upstreams(response: &Response<Bytes>) -> Vec<String> {
    response
        .headers()
        .get("x-upstream")
        .map(|v| v.to_str().unwrap())
        .unwrap_or_default()
        .split(", ")
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The session id of a `Set-Cookie: PHPSESSID=…`.
fn session_cookie(response: &Response<Bytes>) -> String {
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok()?.strip_prefix("PHPSESSID="))
        .map(|rest| rest.split(';').next().unwrap().to_string())
        .next()
        .unwrap_or_else(|| panic!("no session cookie in {:?}", response.headers()))
}

/// Logs in as `user` through the balancer; returns the session id.
async fn login(cluster: &Cluster, user: &str) -> String {
    let response = send(
        cluster.balancer,
        post_form("/login.php", None, &format!("user={user}")),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK, "{response:?}");
    assert_eq!(common::json(&response)["user"], user);
    session_cookie(&response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_on_one_replica_is_seen_on_the_others() {
    let _serial = common::one_at_a_time().await;
    let cluster = Cluster::start(&[]).await;
    let id = login(&cluster, "alice").await;

    for i in 0..REPLICAS {
        // Straight to the replica, bypassing nginx, from the untrusted 127.0.0.1.
        let direct = send(cluster.replica_addr(i), get("/whoami.php", Some(&id), &[])).await;
        let seen = common::json(&direct);
        assert_eq!(seen["user"], "alice", "replica {i} sees the login: {seen}");
        assert_eq!(seen["id"], id.as_str());
        assert_eq!(seen["save_handler"], "redis");
        assert_eq!(seen["remote_addr"], "127.0.0.1");
    }

    // Through the balancer: round robin, so three requests reach all three replicas.
    let mut answered_by = BTreeSet::new();
    for _ in 0..REPLICAS {
        let response = send(cluster.balancer, get("/whoami.php", Some(&id), &[])).await;
        let seen = common::json(&response);
        assert_eq!(seen["user"], "alice", "{seen}");
        // The replica's peer is nginx at 127.0.0.2, trusted: REMOTE_ADDR is the client nginx
        // named in X-Forwarded-For.
        assert_eq!(seen["remote_addr"], "127.0.0.1", "{seen}");
        assert_eq!(seen["x_forwarded_for"], "127.0.0.1", "{seen}");
        answered_by.extend(upstreams(&response));
    }
    assert_eq!(
        answered_by.len(),
        REPLICAS,
        "the balancer spread the requests over every replica: {answered_by:?}"
    );

    // A client's own X-Forwarded-For: nginx appends the real peer (127.0.0.1, not trusted), so
    // the walk from the right stops there.
    let spoofed = send(
        cluster.balancer,
        get("/whoami.php", Some(&id), &[("x-forwarded-for", SPOOFED)]),
    )
    .await;
    let seen = common::json(&spoofed);
    assert_eq!(
        seen["x_forwarded_for"],
        format!("{SPOOFED}, 127.0.0.1"),
        "{seen}"
    );
    assert_eq!(
        seen["remote_addr"], "127.0.0.1",
        "a spoofed X-Forwarded-For through the balancer is not believed: {seen}"
    );

    // Straight to a replica from the untrusted 127.0.0.1: the header changes nothing.
    let direct = send(
        cluster.replica_addr(0),
        get("/whoami.php", Some(&id), &[("x-forwarded-for", SPOOFED)]),
    )
    .await;
    assert_eq!(
        common::json(&direct)["remote_addr"],
        "127.0.0.1",
        "{}",
        common::json(&direct)
    );

    // The same header from the trusted address is believed: trust is the peer's, not the
    // header's.
    let trusted = common::exchange(
        cluster.replica_addr(0),
        Some(BALANCER_IP.parse().unwrap()),
        get("/whoami.php", Some(&id), &[("x-forwarded-for", SPOOFED)]),
    )
    .await
    .unwrap();
    assert_eq!(common::json(&trusted)["remote_addr"], SPOOFED);
    println!(
        "session {id}: user alice seen directly on {REPLICAS} replicas and through the balancer \
         on {answered_by:?}; REMOTE_ADDR 127.0.0.1 through the balancer, with and without a \
         spoofed X-Forwarded-For"
    );
}

/// Sends `n` concurrent increments of one session through the balancer; returns the counter
/// afterwards and the replicas that answered.
async fn concurrent_increments(cluster: &Cluster, n: usize) -> (u64, BTreeSet<String>, String) {
    let id = login(cluster, "counter").await;
    let balancer = cluster.balancer;
    let requests: Vec<_> = (0..n)
        .map(|_| {
            let id = id.clone();
            tokio::spawn(async move {
                send(balancer, get("/increment.php?ms=30", Some(&id), &[])).await
            })
        })
        .collect();
    let mut replicas = BTreeSet::new();
    let mut locking = String::new();
    for request in requests {
        let response = request.await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{response:?}");
        locking = common::json(&response)["locking"]
            .as_str()
            .unwrap()
            .to_string();
        replicas.extend(upstreams(&response));
    }
    let after = common::json(&send(balancer, get("/whoami.php", Some(&id), &[])).await);
    (after["n"].as_u64().unwrap(), replicas, locking)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_locking_loses_no_update_of_concurrent_requests_across_replicas() {
    const N: usize = 20;
    let _serial = common::one_at_a_time().await;
    {
        let cluster = Cluster::start(&[]).await;
        let started = Instant::now();
        let (counter, replicas, locking) = concurrent_increments(&cluster, N).await;
        assert_eq!(locking, "1", "phpredis's conf.d enables session locking");
        assert_eq!(
            replicas.len(),
            REPLICAS,
            "the requests ran on every replica: {replicas:?}"
        );
        assert_eq!(
            counter, N as u64,
            "with the session lock, no concurrent update is lost"
        );
        println!(
            "locking on: {N} concurrent increments over {replicas:?} → counter {counter} in {:.2?}",
            started.elapsed()
        );
    }

    // The same without the lock loses updates: the test above can fail. Six workers read the
    // same counter at once, so a run keeping all 20 updates would be a fluke; a few attempts
    // (bounded) make a fluke harmless.
    let cluster = Cluster::start(&[("PHP_INI_REDIS__SESSION__LOCKING_ENABLED", "0")]).await;
    let mut counters = Vec::new();
    for _ in 0..3 {
        let (counter, _, locking) = concurrent_increments(&cluster, N).await;
        assert_eq!(
            locking, "0",
            "PHP_INI_REDIS__SESSION__LOCKING_ENABLED=0 applies"
        );
        counters.push(counter);
        if counter < N as u64 {
            break;
        }
    }
    println!("locking off: {N} concurrent increments → counter {counters:?}");
    assert!(
        counters.iter().any(|&c| c < N as u64),
        "without the lock, concurrent updates overwrite each other: {counters:?}"
    );
}

/// What one request of the load loop saw.
struct Outcome {
    what: &'static str,
    status: Result<StatusCode, String>,
    user_ok: bool,
    upstream: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_loses_no_request_and_no_session() {
    const LOOPS: usize = 3;
    const CAP_PER_LOOP: usize = 3000;
    let _serial = common::one_at_a_time().await;
    let mut cluster = Cluster::start(&[]).await;
    let id = login(&cluster, "alice").await;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let balancer = cluster.balancer;
    let loops: Vec<_> = (0..LOOPS)
        .map(|l| {
            let (id, stop, sent) = (id.clone(), stop.clone(), sent.clone());
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut outcomes = Vec::new();
                for k in 0..CAP_PER_LOOP {
                    if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                        break;
                    }
                    // Mostly session reads, every third request a POST that updates the session.
                    let (what, request) = if (k + l) % 3 == 0 {
                        (
                            "POST",
                            request(
                                "POST",
                                "/increment.php?ms=0",
                                Some(&id),
                                &[("content-type", "application/x-www-form-urlencoded")],
                                Bytes::from_static(b"note=rolling"),
                            ),
                        )
                    } else {
                        ("GET", get("/whoami.php", Some(&id), &[]))
                    };
                    let response = common::exchange(balancer, None, request).await;
                    sent.fetch_add(1, Ordering::Relaxed);
                    outcomes.push(match response {
                        Ok(response) => Outcome {
                            what,
                            status: Ok(response.status()),
                            user_ok: serde_json::from_slice::<serde_json::Value>(response.body())
                                .is_ok_and(|v| v["user"] == "alice"),
                            upstream: upstreams(&response).join(", "),
                        },
                        Err(error) => Outcome {
                            what,
                            status: Err(error),
                            user_ok: false,
                            upstream: String::new(),
                        },
                    });
                }
                outcomes
            })
        })
        .collect();

    // The load is under way before the first replica goes down, and goes on after the last one
    // is back.
    let answered_at_least = |count: usize| {
        let sent = sent.clone();
        async move { sent.load(Ordering::Relaxed) >= count }
    };
    common::wait_until("the load under way", Duration::from_secs(20), || {
        answered_at_least(100)
    })
    .await;
    let started = Instant::now();
    for i in 0..REPLICAS {
        cluster.rolling_restart(i).await;
    }
    let restart_time = started.elapsed();
    let after_restarts = sent.load(Ordering::Relaxed) + 100;
    common::wait_until(
        "more load after the restarts",
        Duration::from_secs(20),
        || answered_at_least(after_restarts),
    )
    .await;
    stop.store(true, Ordering::Relaxed);

    let mut outcomes = Vec::new();
    for task in loops {
        outcomes.extend(task.await.unwrap());
    }
    let failures: Vec<String> = outcomes
        .iter()
        .filter(|o| o.status != Ok(StatusCode::OK) || !o.user_ok)
        .map(|o| {
            format!(
                "{} → {:?} user_ok={} upstream={}",
                o.what, o.status, o.user_ok, o.upstream
            )
        })
        .collect();
    let posts = outcomes.iter().filter(|o| o.what == "POST").count();
    let retried = outcomes.iter().filter(|o| o.upstream.contains(',')).count();
    println!(
        "rolling restart of {REPLICAS} replicas in {restart_time:.2?} under load: {} requests \
         ({} GET, {posts} POST), {} answered 200 with the logged-in user, {retried} passed to \
         another replica by nginx after a refused connection",
        outcomes.len(),
        outcomes.len() - posts,
        outcomes.len() - failures.len(),
    );
    let nginx_log = cluster.nginx_error_log();
    println!(
        "nginx's error log: {} connect() refused, {} other lines",
        nginx_log
            .lines()
            .filter(|l| l.contains("(111: Connection refused) while connecting to upstream"))
            .count(),
        nginx_log
            .lines()
            .filter(|l| !l.contains("(111: Connection refused) while connecting to upstream"))
            .count(),
    );
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during the rolling restart:\n{}\nnginx's error log:\n{}",
        failures.len(),
        outcomes.len(),
        failures.join("\n"),
        cluster.nginx_error_log()
    );
    assert!(
        outcomes.len() >= 100,
        "the load kept going during the restarts: {} requests",
        outcomes.len()
    );

    // Every POST's session update was kept: the counter equals the POSTs answered.
    let after = common::json(&send(cluster.balancer, get("/whoami.php", Some(&id), &[])).await);
    assert_eq!(after["user"], "alice");
    assert_eq!(
        after["n"].as_u64().unwrap(),
        posts as u64,
        "every POST's update survived the restarts"
    );

    // Each old process logged its drain, and each new one served requests again.
    assert_eq!(cluster.retired.len(), REPLICAS);
    for old in &cluster.retired {
        old.wait_for_log_message("draining open connections");
        old.wait_for_log_message("all connections closed");
    }
    for i in 0..REPLICAS {
        let served = cluster.replica(i).wait_for_logs("access", 1);
        assert!(
            !served.is_empty(),
            "the restarted replica {i} serves requests"
        );
    }
}

/// Starts `count` slow requests through the balancer (ids `{prefix}-{k}`), waits until every
/// replica has two running, SIGKILLs replica 0 and collects the responses.
async fn kill_a_replica_under_slow_requests(
    cluster: &mut Cluster,
    method: &'static str,
    prefix: &str,
    count: usize,
) -> Vec<(String, Response<Bytes>)> {
    let balancer = cluster.balancer;
    let requests: Vec<_> = (0..count)
        .map(|k| {
            let id = format!("{prefix}-{k}");
            tokio::spawn(async move {
                let request = if method == "POST" {
                    post_form("/slow.php?ms=2000", None, &format!("id={id}"))
                } else {
                    get(&format!("/slow.php?ms=2000&id={id}"), None, &[])
                };
                let response = common::exchange(balancer, None, request).await;
                (id, response)
            })
        })
        .collect();
    // Every replica runs two (its two workers), and each script recorded its run.
    for i in 0..REPLICAS {
        common::wait_until(
            &format!("replica {i} to run two slow requests"),
            Duration::from_secs(10),
            || async { cluster.busy_workers(i).await == 2.0 },
        )
        .await;
    }
    common::wait_until(
        "every slow request to record its run in Redis",
        Duration::from_secs(10),
        || async {
            let mut ran = 0;
            for k in 0..count {
                ran += cluster.executions(&format!("{prefix}-{k}")).await;
            }
            ran == count as u64
        },
    )
    .await;
    cluster.sigkill(0);
    let mut responses = Vec::new();
    for request in requests {
        let (id, response) = request.await.unwrap();
        let response = response.unwrap_or_else(|e| panic!("{method} {id}: {e}"));
        responses.push((id, response));
    }
    responses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_replica_costs_only_its_in_flight_posts_which_are_not_retried() {
    const M: usize = 6;
    let _serial = common::one_at_a_time().await;
    let mut cluster = Cluster::start(&[]).await;
    let killed = cluster.upstream_name(0);
    let responses = kill_a_replica_under_slow_requests(&mut cluster, "POST", "post", M).await;

    let mut lost = 0;
    for (id, response) in &responses {
        let upstream = upstreams(response);
        let runs = cluster.executions(id).await;
        if upstream == [killed.clone()] {
            lost += 1;
            assert_eq!(
                response.status(),
                StatusCode::BAD_GATEWAY,
                "{id} was on the killed replica"
            );
        } else {
            assert_eq!(response.status(), StatusCode::OK, "{id}: {upstream:?}");
            assert_eq!(upstream.len(), 1, "{id} went to one replica: {upstream:?}");
            assert_eq!(common::json(response)["runs"], 1);
        }
        assert_eq!(
            runs, 1,
            "{id} ran exactly once: nginx does not pass a POST it already sent to another replica"
        );
    }
    assert_eq!(
        lost, 2,
        "round robin put two of the {M} POSTs on the killed replica (its two workers)"
    );
    println!(
        "{lost} of {M} POSTs in flight on the killed replica {killed}: 502, not retried (each ran \
         once); the other {} answered 200",
        M - lost
    );

    // The others keep serving; a connection refused by the dead replica is passed on, even for
    // a POST (nothing was sent to it yet).
    let mut batch = Vec::new();
    for k in 0..12 {
        let response = if k % 2 == 0 {
            send(cluster.balancer, get("/hello.php", None, &[])).await
        } else {
            send(cluster.balancer, post_form("/hello.php", None, "x=1")).await
        };
        assert_eq!(response.status(), StatusCode::OK, "{response:?}");
        assert!(!upstreams(&response).ends_with(std::slice::from_ref(&killed)));
        batch.push(upstreams(&response).join(", "));
    }
    println!("after the kill, 12 requests (6 GET, 6 POST) all answered 200: {batch:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_gets_on_a_sigkilled_replica_are_retried_on_another() {
    const M: usize = 6;
    let _serial = common::one_at_a_time().await;
    let mut cluster = Cluster::start(&[]).await;
    let killed = cluster.upstream_name(0);
    let responses = kill_a_replica_under_slow_requests(&mut cluster, "GET", "get", M).await;

    let mut retried = 0;
    for (id, response) in &responses {
        let upstream = upstreams(response);
        let runs = cluster.executions(id).await;
        assert_eq!(response.status(), StatusCode::OK, "{id}: {upstream:?}");
        if upstream.first() == Some(&killed) {
            retried += 1;
            assert_eq!(
                upstream.len(),
                2,
                "{id}: nginx passed the GET on to another replica: {upstream:?}"
            );
            assert_eq!(
                runs, 2,
                "{id} ran twice: on the killed replica, then again on the next"
            );
        } else {
            assert_eq!(upstream.len(), 1, "{id}: {upstream:?}");
            assert_eq!(runs, 1, "{id}");
        }
    }
    assert_eq!(
        retried, 2,
        "the two GETs in flight on the killed replica were retried"
    );
    println!(
        "{retried} of {M} GETs in flight on the killed replica {killed}: retried by nginx on \
         another replica, answered 200, and ran twice — a GET must be safe to repeat"
    );
}

/// The `error`-type log lines (PHP's messages) a replica wrote for one request, once `done`
/// accepts them (bounded wait).
async fn php_messages(
    server: &Server,
    response: &Response<Bytes>,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let request_id = response.headers()["x-request-id"].to_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let messages: Vec<String> = server
            .wait_for_logs("error", 0)
            .iter()
            .filter(|line| line["ctx"]["request_id"] == request_id)
            .map(|line| {
                format!(
                    "[{}] {}",
                    line["level"].as_str().unwrap(),
                    line["msg"].as_str().unwrap()
                )
            })
            .collect();
        if done(&messages) {
            return messages;
        }
        assert!(
            Instant::now() < deadline,
            "request {request_id}'s log lines within 10 s: {messages:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_answers_500_with_a_clear_log_line_and_sessions_recover_when_it_returns() {
    let _serial = common::one_at_a_time().await;
    let mut cluster = Cluster::start(&[]).await;
    let replica = cluster.replica_addr(0);
    let id = login(&cluster, "alice").await;
    assert_eq!(
        send(replica, get("/session.php", Some(&id), &[]))
            .await
            .status(),
        StatusCode::OK
    );

    cluster.kill_redis();
    let failed_read = format!(
        "PHP Warning:  session_start(): Failed to read session data: redis (path: \
         tcp://127.0.0.1:{}) in {}",
        cluster.redis_port,
        fixtures().join("session.php").display()
    );
    let uncaught = "PHP Fatal error:  Uncaught RuntimeException: session storage unavailable";

    // A logged-in user: phpredis cannot read the session, session_start() returns false.
    let logged_in = send(replica, get("/session.php", Some(&id), &[])).await;
    assert_eq!(logged_in.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let messages = php_messages(cluster.replica(0), &logged_in, |m| m.len() >= 2).await;
    println!("Redis down, a logged-in user's request logs: {messages:#?}");
    assert!(
        messages[0].starts_with(&format!("[warn] {failed_read}")),
        "{messages:#?}"
    );
    assert!(
        messages[1].starts_with(&format!("[error] {uncaught}")),
        "{messages:#?}"
    );

    // A new visitor: phpredis itself says so first, while creating the session id.
    let visitor = send(replica, get("/session.php", None, &[])).await;
    assert_eq!(visitor.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let messages = php_messages(cluster.replica(0), &visitor, |m| m.len() >= 3).await;
    println!("Redis down, a new visitor's request logs: {messages:#?}");
    assert!(
        messages[0].starts_with(
            "[info] PHP Notice:  session_start(): Redis not available while creating session_id"
        ),
        "{messages:#?}"
    );
    assert!(
        messages[1].starts_with(&format!("[warn] {failed_read}")),
        "{messages:#?}"
    );
    assert!(
        messages[2].starts_with(&format!("[error] {uncaught}")),
        "{messages:#?}"
    );

    // nginx passes the 500 on as it is (http_500 is not in proxy_next_upstream).
    let through_balancer = send(cluster.balancer, get("/session.php", Some(&id), &[])).await;
    assert_eq!(through_balancer.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(upstreams(&through_balancer).len(), 1);

    // Pages without a session keep working, on every replica.
    let mut answered_by = BTreeSet::new();
    for _ in 0..REPLICAS {
        let hello = send(cluster.balancer, get("/hello.php", None, &[])).await;
        assert_eq!(hello.status(), StatusCode::OK);
        assert_eq!(upstreams(&hello).len(), 1, "no retry needed");
        answered_by.extend(upstreams(&hello));
    }
    assert_eq!(answered_by.len(), REPLICAS);

    let redis_server = common::require_program("redis-server", "Debian package redis-server");
    let restarted = Instant::now();
    cluster.start_redis(&redis_server).await;
    common::wait_until(
        "the session page to answer 200 again",
        Duration::from_secs(10),
        || async {
            common::exchange(replica, None, get("/session.php", Some(&id), &[]))
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK)
        },
    )
    .await;
    println!(
        "Redis back: session pages answer 200 again {:.2?} after its restart",
        restarted.elapsed()
    );
    // Redis kept nothing: the old session is gone, and the user has to log in again.
    let whoami = common::json(&send(cluster.balancer, get("/whoami.php", Some(&id), &[])).await);
    assert_eq!(whoami["user"], serde_json::Value::Null, "{whoami}");
    let new_id = login(&cluster, "alice").await;
    let whoami =
        common::json(&send(cluster.balancer, get("/whoami.php", Some(&new_id), &[])).await);
    assert_eq!(whoami["user"], "alice", "a new login works: {whoami}");
    let fresh = send(cluster.balancer, get("/session.php", None, &[])).await;
    assert_eq!(fresh.status(), StatusCode::OK);
    assert_eq!(common::json(&fresh)["visits"], 1, "a new, empty session");
}
