//! The sample site in `www/`, served by the real binary: headless Chromium renders the welcome
//! page and the error pages (titles, the server table, links that lead somewhere), every demo
//! the welcome page links to answers, and `www/TokioPhpFormatter.php` writes the server's JSON
//! log shape from records of Monolog 2's and Monolog 3's shape.
//!
//! Chromium (Debian package `chromium`) is a peer `scripts/install-deps.sh` installs; the test
//! fails, saying so, without it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::process::{binary, Server};
use common::{json, Proto};
use regex::Regex;

fn www() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("www")
}

fn sample_site() -> Server {
    Server::start(
        binary()
            .env("DOCUMENT_ROOT", www())
            .env("ERROR_PAGES_DIR", www().join("errors")),
    )
}

/// The DOM headless Chromium renders for `url`.
fn render(url: &str) -> String {
    // A profile of its own: two Chromiums on one profile refuse to start.
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let profile =
        std::env::temp_dir().join(format!("tokio_php-chromium-{}-{run}", std::process::id()));
    let chromium = common::require_program("chromium", "Debian package chromium");
    let output = Command::new("timeout")
        .arg("60")
        .arg(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .output()
        .expect("timeout runs");
    assert!(
        output.status.success(),
        "chromium {url}: {:?}",
        output.status
    );
    String::from_utf8(output.stdout).unwrap()
}

fn title(dom: &str) -> String {
    Regex::new(r"<title>([^<]*)</title>")
        .unwrap()
        .captures(dom)
        .expect("a title")[1]
        .to_string()
}

fn links(dom: &str) -> Vec<String> {
    Regex::new(r#"<a href="([^"]+)""#)
        .unwrap()
        .captures_iter(dom)
        .map(|c| c[1].to_string())
        .collect()
}

async fn get(addr: std::net::SocketAddr, path: &str) -> http::Response<bytes::Bytes> {
    let request = http::Request::get(path)
        .header("accept", "text/html")
        .header("traceparent", TRACEPARENT)
        .body(Default::default())
        .unwrap();
    common::send(addr, Proto::Http1, request).await
}

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_renders_the_welcome_page_and_every_link_on_it_answers() {
    let server = sample_site();
    let dom = render(&format!("http://{}/", server.addr));
    assert_eq!(title(&dom), "tokio_php");
    let rows: Vec<(String, String)> = Regex::new(r"<tr><th>([^<]*)</th><td>([^<]*)</td></tr>")
        .unwrap()
        .captures_iter(&dom)
        .map(|c| (c[1].to_string(), c[2].to_string()))
        .collect();
    let row = |name: &str| {
        rows.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {name} row in {rows:?}"))
    };
    assert!(row("Server").starts_with("tokio_php "), "{rows:?}");
    assert!(row("PHP").ends_with("(thread-safe)"), "{rows:?}");
    assert_eq!(row("PHP workers"), "2 threads, queue of 200");
    assert_eq!(row("OPcache"), "on");
    assert!(row("JIT").starts_with("on (tracing"), "{rows:?}");
    assert_eq!(row("Protocol"), "HTTP/1.1");
    assert_eq!(row("Trace id").len(), 32);

    let demos = links(&dom);
    for page in [
        "hello.php",
        "info.php",
        "session.php",
        "upload.php",
        "sse.php",
        "finish.php",
        "heartbeat.php",
        "preload.php",
    ] {
        assert!(demos.iter().any(|href| href == page), "{page} not linked");
    }
    for href in &demos {
        let response = get(server.addr, &format!("/{href}")).await;
        assert_eq!(response.status(), 200, "{href} is a broken link");
        assert!(!response.body().is_empty(), "{href} answered nothing");
    }
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_renders_the_error_pages_with_a_way_back() {
    let server = sample_site();
    // A missing page gets errors/404.html through the server's error pages; the others are
    // rendered as the files they are.
    for (path, expected_title) in [
        ("/no-such-page", "404 Page not found"),
        ("/errors/500.html", "500 Something went wrong"),
        ("/errors/503.html", "503 Service unavailable"),
    ] {
        let dom = render(&format!("http://{}{path}", server.addr));
        assert_eq!(title(&dom), expected_title, "{path}");
        let back = links(&dom);
        assert_eq!(back, ["/"], "{path}");
        assert_eq!(get(server.addr, "/").await.status(), 200);
    }
    let missing = get(server.addr, "/no-such-page").await;
    assert_eq!(missing.status(), 404);
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monolog_formatter_writes_the_servers_log_shape_with_the_requests_ids() {
    let server = Server::start(&mut binary());
    for monolog in ["2", "3"] {
        let response = get(server.addr, &format!("/monolog.php?monolog={monolog}")).await;
        let request_id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        let result = json(&response);
        assert_eq!(
            result["implements_monolog_interface"],
            monolog == "3",
            "{result}"
        );
        assert_eq!(result["batch"], "");
        let lines: Vec<serde_json::Value> = result["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|line| {
                let line = line.as_str().unwrap();
                assert!(
                    line.ends_with('\n') && !line.trim_end().contains('\n'),
                    "{line:?}"
                );
                serde_json::from_str(line).unwrap()
            })
            .collect();
        let levels: Vec<&str> = lines.iter().map(|l| l["level"].as_str().unwrap()).collect();
        assert_eq!(
            levels,
            ["debug", "info", "warn", "error"],
            "Monolog {monolog}"
        );
        for line in &lines {
            let keys: Vec<&String> = line.as_object().unwrap().keys().collect();
            assert_eq!(
                keys,
                ["ctx", "data", "level", "msg", "ts", "type"],
                "{line}"
            );
            assert_eq!(line["ts"], "2026-11-29T21:30:15.250Z", "in UTC: {line}");
            assert_eq!(line["type"], "php");
            assert_eq!(line["ctx"]["service"], "tokio_php");
            assert_eq!(line["ctx"]["request_id"], request_id.as_str());
            assert_eq!(line["ctx"]["trace_id"], "0af7651916cd43dd8448eb211c80319c");
            assert_eq!(line["ctx"]["span_id"].as_str().unwrap().len(), 16);
            assert_eq!(line["data"]["channel"], "app");
            assert_eq!(line["data"]["extra"]["host"], "web-1");
        }
        assert_eq!(lines[2]["msg"], "payment declined");
        assert_eq!(lines[2]["data"]["order"], 42);
        let exception = &lines[3]["data"]["exception"];
        assert_eq!(exception["class"], "RuntimeException");
        assert_eq!(exception["message"], "disk full");
        assert_eq!(exception["code"], 28);
    }
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_finish_demo_answers_before_its_work_is_done() {
    let server = sample_site();
    let started = std::time::Instant::now();
    let response = get(server.addr, "/finish.php").await;
    assert_eq!(response.status(), 200);
    assert!(common::text(&response).starts_with("Answered at once"));
    // Its log line comes two seconds later, from the work after the response.
    let lines = server.wait_for_logs("error", 1);
    assert!(
        lines.iter().any(|line| line["msg"]
            .as_str()
            .is_some_and(|m| m.contains("finish.php: work after the response took"))),
        "no log line from the work after the response: {lines:?}"
    );
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(server.terminate().success());
}
