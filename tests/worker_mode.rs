//! Worker mode through the real binary (`WORKER_SCRIPT`): the worker script in
//! tests/fixtures/worker boots once per PHP thread and serves requests through
//! `tokio_handle_request()`. With one worker thread, consecutive requests meet the same run of
//! the script (its answers count them), so these tests can show that nothing of one request's
//! PHP state reaches the next; that faults answer `500` and restart the script (counted by
//! reason in `/metrics`, backing off when they repeat); that timeouts and heartbeats are per
//! request; that a script failing at boot stops startup; that `WORKER_MAX_REQUESTS` bounds a
//! leak; how `WORKER_MATCH` routes; and that shutdown lets a handler finish.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::process::{binary, Server};
use common::{metric, Proto};
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The document root of these tests: `worker.php`, `classic.php`, a static file under `/api/`,
/// a `.env`, and the worker scripts that fail at boot.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/worker")
}

/// The binary serving tests/fixtures/worker with `worker.php` on one worker thread, and the
/// internal server on.
fn worker_binary() -> Command {
    let mut command = binary();
    command
        .env("DOCUMENT_ROOT", root())
        .env("WORKER_SCRIPT", "worker.php")
        .env("PHP_WORKERS", "1")
        .env("INTERNAL_ADDR", "127.0.0.1:0");
    command
}

async fn send(
    server: &Server,
    request: http::request::Builder,
    body: impl Into<Bytes>,
) -> Response<Bytes> {
    common::send(
        server.addr,
        Proto::Http1,
        request.body(Full::new(body.into())).unwrap(),
    )
    .await
}

async fn get(server: &Server, path: &str) -> Response<Bytes> {
    server.get(Proto::Http1, path).await
}

/// The JSON the worker script answers with: the first line of the body (a handler may print
/// more after it).
fn answer(response: &Response<Bytes>) -> Value {
    let body = String::from_utf8_lossy(response.body());
    let line = body.lines().next().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "status {}: the body does not start with JSON ({e}): {body}",
            response.status()
        )
    })
}

/// `GET path`, expecting `200` and the worker script's JSON.
async fn ok(server: &Server, path: &str) -> Value {
    let response = get(server, path).await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{path}: {}",
        String::from_utf8_lossy(response.body())
    );
    answer(&response)
}

fn request_id(response: &Response<Bytes>) -> String {
    response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string()
}

/// Every log line of `type` written so far.
fn logs(server: &Server, log_type: &str) -> Vec<Value> {
    server.wait_for_logs(log_type, 0)
}

/// Waits (bounded) until `count` log lines of `log_type` satisfy `matches`; returns them.
async fn wait_for_lines(
    server: &Server,
    log_type: &str,
    count: usize,
    what: &str,
    matches: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found: Vec<Value> = logs(server, log_type)
            .into_iter()
            .filter(|line| matches(line))
            .collect();
        if found.len() >= count {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{count} log lines {what} within 10 s; found {found:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The "restarting the worker script" lines written so far, waiting for at least `count`.
async fn restart_lines(server: &Server, count: usize) -> Vec<Value> {
    wait_for_lines(
        server,
        "app",
        count,
        "restarting the worker script",
        |line| {
            line["msg"]
                .as_str()
                .is_some_and(|m| m.starts_with("restarting the worker script"))
        },
    )
    .await
}

/// PHP's error line for the request `id`, containing `needle`.
async fn php_error_of(server: &Server, id: &str, needle: &str) -> Value {
    let lines = wait_for_lines(
        server,
        "error",
        1,
        &format!("of request {id} with {needle:?}"),
        |line| {
            line["ctx"]["request_id"] == id
                && line["msg"].as_str().is_some_and(|m| m.contains(needle))
        },
    )
    .await;
    lines[0].clone()
}

fn restarts(metrics: &str, reason: &str) -> f64 {
    metric(
        metrics,
        &format!("tokio_php_worker_restarts_total{{reason=\"{reason}\"}}"),
    )
}

/// Polls `/metrics` (bounded) until it counts at least `expected` restarts for `reason`.
async fn wait_for_restarts(server: &Server, reason: &str, expected: f64) -> String {
    server
        .wait_for_metrics(&format!("{expected} restarts for {reason}"), |text| {
            restarts(text, reason) >= expected
        })
        .await
}

fn encode(value: &str) -> String {
    utf8_percent_encode(value, NON_ALPHANUMERIC).to_string()
}

fn multipart(boundary: &str, field: &str, filename: &str, content: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; \
         filename=\"{filename}\"\r\nContent-Type: text/plain\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

/// Runs the binary until it exits (it must, within 20 s); returns its exit code and stderr.
fn run_to_exit(command: &mut Command) -> (Option<i32>, String) {
    let output = common::run_bounded(command, Duration::from_secs(20));
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

// ---- 1. Per-request state ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_request_state_does_not_carry_over_to_the_next_request() {
    let server = Server::start(&mut worker_binary());
    let baseline = ok(&server, "/?do=state").await;
    assert_eq!(baseline["n"], 1);
    assert_eq!(baseline["found"]["script_name"], "/worker.php");
    assert_eq!(
        baseline["found"]["precision"], "10",
        "the worker script's boot set precision=10"
    );
    let run = baseline["run"].clone();

    // A request that changes everything it can.
    let dirty = send(
        &server,
        Request::post("/?do=dirty&a=1")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::COOKIE, "c=1")
            .header("x-first", "one"),
        "p=1",
    )
    .await;
    assert_eq!(
        dirty.status().as_u16(),
        203,
        "http_response_code(203) applies"
    );
    assert_eq!(dirty.headers()["x-leak"], "yes");
    let body = String::from_utf8_lossy(dirty.body()).into_owned();
    assert!(
        body.ends_with("left-in-an-open-buffer"),
        "a buffer the handler left open is flushed into its own response: {body}"
    );
    let dirty = answer(&dirty);
    assert_eq!(
        (dirty["n"].clone(), dirty["run"].clone()),
        (json!(2), run.clone())
    );
    let found = &dirty["found"];
    assert_eq!(found["get"], json!({"do": "dirty", "a": "1"}));
    assert_eq!(found["post"], json!({"p": "1"}));
    assert_eq!(found["cookie"], json!({"c": "1"}));
    // request_order is GP (docs/php.md): no cookies in $_REQUEST.
    assert_eq!(found["request"], json!({"do": "dirty", "a": "1", "p": "1"}));
    assert_eq!(found["http"]["HTTP_X_FIRST"], "one");
    assert_eq!(found["input"], "p=1");
    assert_eq!(
        dirty["changed"],
        json!({
            "precision": "3",
            "max_execution_time": "77",
            "ignore_user_abort": 1,
            "last_error": "a warning left behind",
        }),
        "the changes took effect in their own request"
    );

    // The next request on the same run: a JSON body, other headers, no cookie.
    let next = send(
        &server,
        Request::post("/?do=state&b=2")
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-second", "two"),
        r#"{"k":"v"}"#,
    )
    .await;
    assert_eq!(
        next.status(),
        StatusCode::OK,
        "the status did not carry over"
    );
    assert!(
        !next.headers().contains_key("x-leak"),
        "header() did not carry over: {:?}",
        next.headers()
    );
    assert!(
        !String::from_utf8_lossy(next.body()).contains("left-in-an-open-buffer"),
        "the open buffer went with its own response"
    );
    let next = answer(&next);
    assert_eq!(
        (next["n"].clone(), next["run"].clone()),
        (json!(3), run.clone())
    );
    let found = &next["found"];
    assert_eq!(found["get"], json!({"do": "state", "b": "2"}));
    assert_eq!(found["post"], json!([]));
    assert_eq!(found["cookie"], json!([]));
    assert_eq!(found["request"], json!({"do": "state", "b": "2"}));
    assert_eq!(found["uri"], "/?do=state&b=2");
    assert_eq!(found["method"], "POST");
    assert_eq!(found["http"]["HTTP_X_SECOND"], "two");
    assert!(
        found["http"].get("HTTP_X_FIRST").is_none() && found["http"].get("HTTP_COOKIE").is_none(),
        "only this request's headers: {}",
        found["http"]
    );
    assert!(
        found["http"].get("HTTP_X_INJECTED").is_none(),
        "$_SERVER is built afresh: {}",
        found["http"]
    );
    assert_eq!(found["files"], json!([]));
    assert_eq!(found["input"], r#"{"k":"v"}"#);
    assert_eq!(found["headers_sent"], false);
    assert!(
        !found["headers"].to_string().contains("X-Leak"),
        "headers_list() starts without the last request's headers: {}",
        found["headers"]
    );
    assert_eq!(found["status"], 200);
    assert_eq!(found["ob_level"], baseline["found"]["ob_level"]);
    assert_eq!(
        found["precision"], "10",
        "ini_set() undone, back to the value the boot set"
    );
    assert_eq!(
        found["max_execution_time"], baseline["found"]["max_execution_time"],
        "set_time_limit() undone"
    );
    assert_eq!(found["ignore_user_abort"], 0, "ignore_user_abort() undone");
    assert_eq!(
        found["last_error"],
        Value::Null,
        "error_get_last() starts empty"
    );
    assert_eq!(found["aborted"], 0);

    // php://input belongs to the request that sent the body.
    let plain = ok(&server, "/?do=state").await;
    assert_eq!(plain["n"], 4);
    assert_eq!(plain["found"]["input"], "");
    assert_eq!(plain["found"]["method"], "GET");
    assert_eq!(plain["found"]["post"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_file_is_gone_after_its_request() {
    let server = Server::start(&mut worker_binary());
    let boundary = "worker-mode-boundary";
    let upload = send(
        &server,
        Request::post("/?do=upload").header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        ),
        multipart(boundary, "doc", "notes.txt", b"uploaded through a worker"),
    )
    .await;
    assert_eq!(upload.status(), StatusCode::OK);
    let upload = answer(&upload);
    let file = &upload["found"]["files"]["doc"];
    assert_eq!(file["name"], "notes.txt", "{upload}");
    assert_eq!(file["size"], 25);
    assert_eq!(file["error"], 0);
    assert_eq!(upload["tmp_exists"]["doc"], true, "{upload}");
    let tmp_name = file["tmp_name"].as_str().unwrap();

    let next = ok(&server, &format!("/?do=exists&path={}", encode(tmp_name))).await;
    assert_eq!(next["run"], upload["run"], "the same run of the script");
    assert_eq!(next["n"], 2);
    assert_eq!(
        next["exists"], false,
        "{tmp_name} was deleted after its request"
    );
    assert_eq!(next["found"]["files"], json!([]), "$_FILES starts empty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_belongs_only_to_the_client_that_started_it() {
    let sessions = tempfile::tempdir().unwrap();
    let server = Server::start(worker_binary().env("PHP_INI_SESSION__SAVE_PATH", sessions.path()));

    let alice = get(&server, "/?do=session_start&owner=alice").await;
    assert_eq!(alice.status(), StatusCode::OK);
    let cookie = alice
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("PHPSESSID="))
        .expect("a session cookie for alice");
    let alice = answer(&alice);
    let alice_id = alice["session_id"].as_str().unwrap().to_string();
    assert!(
        cookie.starts_with(&format!("PHPSESSID={alice_id};")),
        "{cookie}"
    );
    assert_eq!(alice["session"], json!({"owner": "alice", "visits": 1}));
    assert!(
        sessions.path().join(format!("sess_{alice_id}")).is_file(),
        "the session was written when its request ended"
    );

    // Another client, no cookie, on the same run of the script.
    let other = ok(&server, "/?do=session_peek").await;
    assert_eq!(
        (other["n"].clone(), other["run"].clone()),
        (json!(2), alice["run"].clone())
    );
    assert_eq!(
        other["found"]["session_set"], false,
        "no $_SESSION before session_start(): {other}"
    );
    assert_eq!(other["found"]["session_status"], 1, "PHP_SESSION_NONE");
    assert_ne!(other["session_id"], alice_id.as_str(), "a fresh session");
    assert_eq!(other["session"], json!([]), "nothing of alice's session");

    // Alice comes back with her cookie.
    let back = send(
        &server,
        Request::get("/?do=session_peek").header(header::COOKIE, format!("PHPSESSID={alice_id}")),
        Bytes::new(),
    )
    .await;
    let back = answer(&back);
    assert_eq!(
        (back["n"].clone(), back["run"].clone()),
        (json!(3), alice["run"].clone())
    );
    assert_eq!(back["found"]["session_set"], false);
    assert_eq!(back["session_id"], alice_id.as_str());
    assert_eq!(back["session"], json!({"owner": "alice", "visits": 1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_left_is_not_seen_as_gone_by_the_next_request() {
    let server = Server::start(&mut worker_binary());
    let first = ok(&server, "/?do=state").await;

    // The client reads the start of a streamed answer, then leaves.
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /?do=abort HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("the streamed answer starts")
        .unwrap();
    assert!(read > 0);
    drop(stream);

    // Queued behind the handler, which runs on to its end.
    let next = ok(&server, "/?do=state").await;
    assert_eq!(
        (next["n"].clone(), next["run"].clone()),
        (json!(3), first["run"].clone())
    );
    assert_eq!(
        next["found"]["last_abort"], 1,
        "the handler saw its client leave: {next}"
    );
    assert_eq!(
        next["found"]["aborted"], 0,
        "connection_aborted() is false at the start of the next request"
    );
    assert_eq!(next["found"]["ignore_user_abort"], 0);
}

// ---- 2. Faults -----------------------------------------------------------------------------------

struct Fault {
    query: &'static str,
    status: u16,
    reason: &'static str,
    /// In PHP's error line for the request, or `None` when PHP reports no error (`exit()`).
    php_error: Option<&'static str>,
    /// In the restart line.
    restart_message: &'static str,
}

const FAULTS: [Fault; 7] = [
    Fault {
        query: "fatal",
        status: 500,
        reason: "fatal_error",
        php_error: Some("PHP Fatal error:  a fatal error in the handler"),
        restart_message: "a fatal error in the handler",
    },
    Fault {
        query: "redeclare",
        status: 500,
        reason: "fatal_error",
        php_error: Some("Cannot redeclare tokio_php_test_declared_twice()"),
        restart_message: "Cannot redeclare",
    },
    Fault {
        query: "throw",
        status: 500,
        reason: "exception",
        php_error: Some("Uncaught RuntimeException: an exception nothing caught"),
        restart_message: "an exception nothing caught",
    },
    Fault {
        query: "undefined_method",
        status: 500,
        reason: "exception",
        php_error: Some("Call to undefined method stdClass::noSuchMethod()"),
        restart_message: "noSuchMethod",
    },
    Fault {
        query: "exit",
        status: 500,
        reason: "exit",
        php_error: None,
        restart_message: "exit() in a request handler",
    },
    Fault {
        query: "memory",
        status: 500,
        reason: "memory_limit",
        php_error: Some("Allowed memory size of"),
        restart_message: "Allowed memory size of",
    },
    // PHP's rule: exit() turns only a 200 into a 500.
    Fault {
        query: "redirect_exit",
        status: 302,
        reason: "exit",
        php_error: None,
        restart_message: "exit() in a request handler",
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_answers_500_and_the_next_request_gets_a_fresh_run() {
    let server = Server::start(worker_binary().env("PHP_INI_MEMORY_LIMIT", "64M"));
    let mut expected = std::collections::HashMap::<&str, f64>::new();
    for (i, fault) in FAULTS.iter().enumerate() {
        let before = ok(&server, "/?do=state").await;
        let response = get(&server, &format!("/?do={}", fault.query)).await;
        assert_eq!(
            response.status().as_u16(),
            fault.status,
            "{}: {}",
            fault.query,
            String::from_utf8_lossy(response.body())
        );
        if fault.query == "redirect_exit" {
            assert_eq!(response.headers()[header::LOCATION], "/x");
        }
        let id = request_id(&response);
        match fault.php_error {
            Some(needle) => {
                let line = php_error_of(&server, &id, needle).await;
                assert_eq!(line["level"], "error", "{line}");
            }
            None => {
                wait_for_lines(&server, "app", 1, "ending the request on exit()", |line| {
                    line["ctx"]["request_id"] == id.as_str()
                        && line["msg"] == "the worker script ended while handling a request"
                })
                .await;
            }
        }

        let after = ok(&server, "/?do=state").await;
        assert_eq!(
            after["n"], 1,
            "{}: a fresh run of the script: {after}",
            fault.query
        );
        assert_ne!(after["run"], before["run"], "{}", fault.query);

        let count = expected.entry(fault.reason).or_default();
        *count += 1.0;
        let text = wait_for_restarts(&server, fault.reason, *count).await;
        assert_eq!(restarts(&text, fault.reason), *count, "{}", fault.query);
        let lines = restart_lines(&server, i + 1).await;
        let line = &lines[i];
        assert_eq!(
            line["data"]["reason"], fault.reason,
            "{}: {line}",
            fault.query
        );
        assert!(
            line["msg"]
                .as_str()
                .unwrap()
                .contains(fault.restart_message),
            "{}: {line}",
            fault.query
        );
        assert_eq!(
            line["data"]["wait_ms"], 0,
            "a first failure restarts at once"
        );
    }
    let text = server.metrics().await;
    for (reason, count) in [
        ("fatal_error", 2.0),
        ("exception", 2.0),
        ("exit", 2.0),
        ("memory_limit", 1.0),
    ] {
        assert_eq!(restarts(&text, reason), count, "{reason}");
    }
    assert_eq!(restarts(&text, "max_requests"), 0.0);
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_failing_every_time_backs_off_while_the_server_answers() {
    let server = Server::start(
        worker_binary()
            .env("WORKER_MATCH", "/api")
            .env("WORKER_THREADS", "1"),
    );
    for attempt in 0..5 {
        let response = get(&server, "/api/?do=throw").await;
        assert_eq!(
            response.status(),
            StatusCode::INTERNAL_SERVER_ERROR,
            "attempt {attempt}"
        );
    }
    let lines = restart_lines(&server, 5).await;
    let waits: Vec<u64> = lines
        .iter()
        .map(|l| l["data"]["wait_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(waits[0], 0, "the first restart is immediate: {waits:?}");
    assert!(
        waits[1] > 0 && waits.windows(2).skip(1).all(|w| w[1] > w[0]),
        "repeated failures wait longer and longer: {waits:?}"
    );
    // While the worker script waits to start again, the rest of the server answers.
    let classic = get(&server, "/classic.php").await;
    assert_eq!(classic.status(), StatusCode::OK);
    assert_eq!(answer(&classic)["classic"], true);
    let health = server.internal_get("/health").await;
    assert_eq!(health.status(), StatusCode::OK, "{:?}", health.body());
    // And the worker script serves again once a request succeeds.
    let back = ok(&server, "/api/?do=state").await;
    assert_eq!(back["n"], 1);
    assert!(server.terminate().success());
}

// ---- 3. Timeouts and heartbeats ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_handler_answers_504_and_the_script_restarts() {
    let server = Server::start(worker_binary().env("REQUEST_TIMEOUT", "1s"));
    let before = ok(&server, "/?do=state").await;
    let started = Instant::now();
    let response = get(&server, "/?do=loop").await;
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let after = ok(&server, "/?do=state").await;
    assert_eq!(after["n"], 1, "a fresh run: {after}");
    assert_ne!(after["run"], before["run"]);
    let text = wait_for_restarts(&server, "timeout", 1.0).await;
    assert_eq!(restarts(&text, "timeout"), 1.0);
    let lines = restart_lines(&server, 1).await;
    assert_eq!(lines[0]["data"]["reason"], "timeout", "{}", lines[0]);
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_extends_only_its_own_request() {
    let server = Server::start(worker_binary().env("REQUEST_TIMEOUT", "1s"));
    // A heartbeat may move the deadline at most REQUEST_TIMEOUT ahead; a longer one is refused.
    let refused = ok(&server, "/?do=beat&extend=3").await;
    assert_eq!(refused["beat"], false, "{refused}");
    assert_eq!(ok(&server, "/?do=beat&extend=1").await["beat"], true);

    // Each heartbeat asks for 1 s: the most REQUEST_TIMEOUT=1s allows.
    let started = Instant::now();
    let beating = get(&server, "/?do=heartbeat&extend=1").await;
    assert_eq!(
        beating.status(),
        StatusCode::OK,
        "heartbeats kept a 2 s handler alive under REQUEST_TIMEOUT=1s"
    );
    assert!(started.elapsed() >= Duration::from_secs(2));
    let beating = answer(&beating);
    assert_eq!(beating["beats"], json!(vec![true; 10]), "{beating}");
    assert_eq!(
        (beating["n"].clone(), beating["run"].clone()),
        (json!(3), refused["run"].clone())
    );

    // The same run, no heartbeat: the deadline is 1 s again.
    let slow = get(&server, "/?do=sleep&ms=1500").await;
    assert_eq!(slow.status(), StatusCode::GATEWAY_TIMEOUT);
    let after = ok(&server, "/?do=state").await;
    assert_eq!(after["n"], 1, "{after}");
    assert_ne!(
        after["run"], beating["run"],
        "the timeout ended the run that served the heartbeats"
    );
    let text = wait_for_restarts(&server, "timeout", 1.0).await;
    assert_eq!(restarts(&text, "timeout"), 1.0, "one restart: the 504's");
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_limit_set_by_a_handler_ends_with_its_request() {
    let server = Server::start(&mut worker_binary());
    let limited = ok(&server, "/?do=time_limit&seconds=1").await;
    // 1.5 s of CPU on the same run: a 1 s limit left over would stop it.
    let busy = ok(&server, "/?do=busy&ms=1500").await;
    assert_eq!(
        (busy["n"].clone(), busy["run"].clone()),
        (json!(2), limited["run"].clone())
    );
    assert_eq!(
        busy["found"]["max_execution_time"],
        limited["found"]["max_execution_time"]
    );
    // Within its own request, the limit applies: max_execution_time ends the script.
    let spin = get(&server, "/?do=time_limit&seconds=1&spin=1").await;
    assert_eq!(spin.status(), StatusCode::INTERNAL_SERVER_ERROR);
    php_error_of(
        &server,
        &request_id(&spin),
        "Maximum execution time of 1 second exceeded",
    )
    .await;
    let after = ok(&server, "/?do=state").await;
    assert_eq!(after["n"], 1, "a fresh run: {after}");
    let text = wait_for_restarts(&server, "timeout", 1.0).await;
    assert_eq!(restarts(&text, "timeout"), 1.0);
    assert!(server.terminate().success());
}

// ---- 4. Startup ------------------------------------------------------------------------------------

#[test]
fn a_worker_script_failing_at_boot_stops_startup() {
    for (script, message) in [
        (
            "boot_throws.php",
            "Uncaught RuntimeException: no database at boot",
        ),
        (
            "boot_returns.php",
            "it ended before calling tokio_handle_request()",
        ),
        ("boot_parse_error.php", "syntax error"),
    ] {
        let started = Instant::now();
        let (code, stderr) = run_to_exit(
            binary()
                .env("DOCUMENT_ROOT", root())
                .env("PHP_WORKERS", "1")
                .env("WORKER_SCRIPT", script),
        );
        assert_eq!(code, Some(1), "{script}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "the worker script {} failed while booting",
                root().join(script).display()
            )),
            "{script}: {stderr}"
        );
        assert!(stderr.contains(message), "{script}: {stderr}");
        assert!(started.elapsed() < Duration::from_secs(20));
    }
}

#[test]
fn worker_settings_are_checked_at_startup() {
    for (env, code, message) in [
        (
            &[("WORKER_SCRIPT", "worker.php"), ("WORKER_MATCH", "api")][..],
            2,
            r#"error: invalid WORKER_MATCH="api": expected * or a path prefix such as /api, got "api""#,
        ),
        (
            &[("WORKER_MAX_REQUESTS", "10")][..],
            2,
            "error: WORKER_MAX_REQUESTS is set but WORKER_SCRIPT is not; it applies to worker mode only",
        ),
        (
            &[("WORKER_SCRIPT", "missing.php")][..],
            1,
            "error: WORKER_SCRIPT=missing.php: No such file or directory (os error 2)",
        ),
    ] {
        let mut command = binary();
        command.env("DOCUMENT_ROOT", root());
        for (name, value) in env {
            command.env(name, value);
        }
        let (status, stderr) = run_to_exit(&mut command);
        assert_eq!(status, Some(code), "{env:?}: {stderr}");
        assert!(stderr.contains(message), "{env:?}: {stderr}");
    }
}

// ---- 5. WORKER_MAX_REQUESTS --------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaking_handler_runs_out_of_memory_without_a_request_limit() {
    let server = Server::start(worker_binary().env("PHP_INI_MEMORY_LIMIT", "32M"));
    let mut failed_at = None;
    for request in 1..40 {
        let response = get(&server, "/?do=grow").await;
        if response.status() != StatusCode::OK {
            assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
            failed_at = Some(request);
            break;
        }
        assert_eq!(answer(&response)["hoard"], request);
    }
    assert!(failed_at.is_some(), "32M ran out before request 40");
    assert_eq!(ok(&server, "/?do=grow").await["hoard"], 1, "a fresh run");
    let text = wait_for_restarts(&server, "memory_limit", 1.0).await;
    assert_eq!(restarts(&text, "memory_limit"), 1.0);
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_max_requests_bounds_what_a_leaking_handler_keeps() {
    let server = Server::start(
        worker_binary()
            .env("PHP_INI_MEMORY_LIMIT", "32M")
            .env("WORKER_MAX_REQUESTS", "10"),
    );
    let mut most_memory = 0;
    let mut runs = std::collections::HashSet::new();
    for request in 0..60 {
        let answer = ok(&server, "/?do=grow").await;
        assert_eq!(
            answer["hoard"],
            request % 10 + 1,
            "request {request}: {answer}"
        );
        most_memory = most_memory.max(answer["memory"].as_u64().unwrap());
        runs.insert(answer["run"].as_str().unwrap().to_string());
    }
    assert_eq!(runs.len(), 6, "ten requests per run");
    assert!(
        most_memory < 16 << 20,
        "memory_get_usage() stays bounded: {most_memory}"
    );
    let text = wait_for_restarts(&server, "max_requests", 6.0).await;
    assert_eq!(restarts(&text, "max_requests"), 6.0);
    assert_eq!(restarts(&text, "memory_limit"), 0.0);
    let line = &restart_lines(&server, 1).await[0];
    assert_eq!(line["data"]["reason"], "max_requests", "{line}");
    assert_eq!(line["level"], "info", "not a failure: {line}");
    assert!(server.terminate().success());
}

// ---- 6. Routing ----------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_match_sends_only_its_prefix_to_the_worker_script() {
    let server = Server::start(
        worker_binary()
            .env("WORKER_MATCH", "/api")
            .env("WORKER_THREADS", "1")
            .env("TRY_FILES", "$uri /classic.php?$args"),
    );
    let first = ok(&server, "/api/x").await;
    let second = ok(&server, "/api/x?y=1").await;
    assert_eq!(first["found"]["script_name"], "/worker.php");
    assert_eq!(first["found"]["uri"], "/api/x");
    assert_eq!(
        (second["n"].clone(), second["run"].clone()),
        (json!(2), first["run"].clone()),
        "the worker's counter grows"
    );
    assert_eq!(second["found"]["get"], json!({"y": "1"}));
    assert_eq!(ok(&server, "/api").await["n"], 3);

    for path in ["/apis", "/classic.php"] {
        let classic = ok(&server, path).await;
        assert_eq!(classic["classic"], true, "{path}: {classic}");
        assert_eq!(classic["script_name"], "/classic.php", "{path}");
        assert_eq!(
            classic["error"],
            "tokio_handle_request() works only in a worker script (WORKER_SCRIPT)",
            "{path}"
        );
    }

    let file = get(&server, "/api/data.json").await;
    assert_eq!(file.status(), StatusCode::OK);
    assert_eq!(
        file.body().as_ref(),
        b"{\"static\": true}\n",
        "served as a file"
    );
    assert_eq!(
        ok(&server, "/api/y").await["n"],
        4,
        "nothing else reached the worker"
    );
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_match_all_sends_every_script_request_to_the_worker_script() {
    let server = Server::start(worker_binary().env("WORKER_MATCH", "*"));
    for (i, path) in ["/no/such/page", "/other.php", "/classic.php"]
        .iter()
        .enumerate()
    {
        let answer = ok(&server, path).await;
        assert_eq!(answer["n"], i + 1, "{path}: {answer}");
        assert_eq!(answer["found"]["script_name"], "/worker.php", "{path}");
        assert_eq!(answer["found"]["uri"], *path);
    }
    let file = get(&server, "/api/data.json").await;
    assert_eq!(file.status(), StatusCode::OK);
    assert_eq!(file.body().as_ref(), b"{\"static\": true}\n");
    for hidden in ["/.env", "/worker.php"] {
        let response = get(&server, hidden).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{hidden}");
        assert!(
            !String::from_utf8_lossy(response.body()).contains("SECRET"),
            "{hidden}"
        );
    }
    assert_eq!(
        ok(&server, "/").await["n"],
        4,
        "the 404s never reached the worker"
    );
    assert!(server.terminate().success());
}

// ---- 7. Metrics --------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_metrics_count_requests_and_pass_promtool() {
    let server = Server::start(&mut worker_binary());
    for _ in 0..3 {
        ok(&server, "/?do=state").await;
    }
    let text = server
        .wait_for_metrics("three worker requests", |text| {
            metric(text, "tokio_php_worker_requests_total{worker=\"0\"}") == 3.0
        })
        .await;
    assert_eq!(
        metric(&text, "tokio_php_worker_script_requests{worker=\"0\"}"),
        3.0
    );

    // A fault counts as a request served, and the new run starts counting from zero.
    assert_eq!(
        get(&server, "/?do=throw").await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    ok(&server, "/?do=state").await;
    let text = server
        .wait_for_metrics("five worker requests", |text| {
            metric(text, "tokio_php_worker_requests_total{worker=\"0\"}") == 5.0
        })
        .await;
    assert_eq!(
        metric(&text, "tokio_php_worker_script_requests{worker=\"0\"}"),
        1.0,
        "the run serving now has served one"
    );
    assert_eq!(restarts(&text, "exception"), 1.0);
    for reason in [
        "max_requests",
        "fatal_error",
        "memory_limit",
        "exit",
        "timeout",
        "stack_overflow",
        "script_ended",
        "boot_failed",
    ] {
        assert_eq!(restarts(&text, reason), 0.0, "{reason}");
    }
    common::promtool_accepts(&text);
    assert!(server.terminate().success());
}

// ---- 8. Shutdown ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_handler_finish_its_request() {
    let mut server = Server::start(&mut worker_binary());
    let addr = server.addr;
    let slow = tokio::spawn(async move {
        common::send(
            addr,
            Proto::Http1,
            Request::get("/?do=sleep&ms=1500")
                .body(Full::default())
                .unwrap(),
        )
        .await
    });
    server
        .wait_for_metrics("the handler at work", |text| {
            metric(text, "tokio_php_php_workers_busy") == 1.0
        })
        .await;
    server.sigterm();
    let response = slow.await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        answer(&response)["found"]["get"],
        json!({"do": "sleep", "ms": "1500"})
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the server exits after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
}

// ---- 9. HTTP/2 -------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_requests_run_through_the_worker_script() {
    let server = Server::start(&mut worker_binary());
    let first = server.get(Proto::H2c, "/?do=state&h=2").await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.version(), http::Version::HTTP_2);
    let first = answer(&first);
    assert_eq!(first["found"]["get"], json!({"do": "state", "h": "2"}));
    let posted = common::send(
        server.addr,
        Proto::H2c,
        Request::post("/?do=state")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(b"{\"over\":\"h2\"}")))
            .unwrap(),
    )
    .await;
    assert_eq!(posted.status(), StatusCode::OK);
    let posted = answer(&posted);
    assert_eq!(
        (posted["n"].clone(), posted["run"].clone()),
        (json!(2), first["run"].clone())
    );
    assert_eq!(posted["found"]["input"], "{\"over\":\"h2\"}");
    assert_eq!(posted["found"]["method"], "POST");
    assert!(server.terminate().success());
}
