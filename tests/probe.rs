//! The server probed from outside as an attacker would: a raw-socket corpus of malformed and
//! ambiguous HTTP/1.1, and paths that try to reach files outside the document root or the
//! source of scripts, in the three routing modes (files only, `INDEX_FILE`, `TRY_FILES`).
//! Every refusal is checked, and the next ordinary request must still work.

mod common;

use std::path::Path;

use common::{raw_exchange, raw_status, Proto, TestServer};
use http::StatusCode;
use tokio_php::layer::try_files::TryFilesRule;
use tokio_php::stack::{self, StackConfig};
use tokio_php::{
    http::DocumentRoot,
    php::{PhpService, PhpServiceConfig, PoolConfig},
};

/// In every script and source copy; never in a response.
const SOURCE_MARKER: &str = "SOURCE-MARKER";
/// In the file outside the document root; never in a response.
const OUTSIDE_MARKER: &str = "OUTSIDE-MARKER";

/// A document root with scripts, their editor and deploy copies, dotfiles, a static file and a
/// symlink out; beside it (outside) a secret.
fn probe_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("www");
    for sub in ["sub", ".git", "static"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    let script = format!("<?php /* {SOURCE_MARKER} */ echo 'FRONT';");
    let page = format!("<?php /* {SOURCE_MARKER} */ echo 'PAGE ', $_SERVER['HTTP_HOST'] ?? '';");
    let files: [(&str, &str); 14] = [
        ("index.php", &script),
        ("page.php", &page),
        ("sub/page.php", &page),
        ("page.php.bak", &page),
        ("page.php~", &page),
        ("#page.php#", &page),
        (".page.php.swp", &page),
        ("page.php.orig", &page),
        ("page.php.save", &page),
        ("config.inc", &page),
        ("view.phtml", &page),
        (".env", SOURCE_MARKER),
        (".git/config", SOURCE_MARKER),
        ("static/style.css", "body{}"),
    ];
    for (name, content) in files {
        std::fs::write(root.join(name), content).unwrap();
    }
    std::fs::write(dir.path().join("secret.txt"), OUTSIDE_MARKER).unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("leak.txt")).unwrap();
    std::os::unix::fs::symlink(dir.path(), root.join("up")).unwrap();
    dir
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    FilesOnly,
    IndexFile,
    TryFiles,
}

async fn probe_server(root: &Path, mode: Mode) -> TestServer {
    let root = DocumentRoot::new(root.join("www")).unwrap();
    let config = StackConfig {
        document_root: Some(root.clone()),
        index_file: matches!(mode, Mode::IndexFile).then(|| "index.php".to_string()),
        try_files: matches!(mode, Mode::TryFiles).then(|| {
            "$uri $uri/ /index.php?$args"
                .parse::<TryFilesRule>()
                .unwrap()
        }),
        ..common::stack_config()
    };
    let pool = PoolConfig {
        workers: 1,
        ..PoolConfig::default()
    };
    TestServer::serve(pool, move |pool| {
        stack::build(&config, PhpService::new(pool, PhpServiceConfig::new(root))).unwrap()
    })
    .await
}

/// Request targets that try to leave the root, reach a script's source or a hidden file.
const ATTACK_PATHS: &[&str] = &[
    "/../secret.txt",
    "/../../secret.txt",
    "/sub/../../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E/secret.txt",
    "/%2e%2e%2fsecret.txt",
    "/..%2fsecret.txt",
    "/..%2Fsecret.txt",
    "/sub/%2e%2e/%2e%2e/secret.txt",
    "/%252e%252e/secret.txt",
    "/..%5csecret.txt",
    "/..%5c..%5csecret.txt",
    "/....//secret.txt",
    "/..;/secret.txt",
    "/%c0%ae%c0%ae/secret.txt",
    "/%e0%80%ae%e0%80%ae/secret.txt",
    "/%uff0e%uff0e/secret.txt",
    "//secret.txt",
    "/./../secret.txt",
    "/sub/./../../secret.txt",
    "/leak.txt",
    "/up/secret.txt",
    "/up/www/page.php.bak",
    "/%2fetc%2fpasswd",
    "/page.php.bak",
    "/page.php.bak/",
    "/PAGE.PHP.BAK",
    "/page.php~",
    "/page.php%7e",
    "/%23page.php%23",
    "/.page.php.swp",
    "/page.php.orig",
    "/page.php.save",
    "/config.inc",
    "/config.INC",
    "/view.phtml",
    "/page.php%00.txt",
    "/page.php%00",
    "/page.php%20",
    "/page.php.",
    "/page%2ephp.bak",
    "/page.php::$DATA",
    "/.env",
    "/%2eenv",
    "/.git/config",
    "/%2egit/config",
    "/sub/../.env",
    "/static/../.env",
    "/.git/",
    "/sub/..%2f.env",
    "/index.php/../../secret.txt",
    "/index.php%2f..%2f..%2fsecret.txt",
    "/static/style.css/../../secret.txt",
    "/page.php/..%2f..%2fsecret.txt",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_paths_reach_no_source_and_nothing_outside_the_root() {
    assert!(ATTACK_PATHS.len() >= 50);
    let dir = probe_root();
    for mode in [Mode::FilesOnly, Mode::IndexFile, Mode::TryFiles] {
        let server = probe_server(dir.path(), mode).await;
        for path in ATTACK_PATHS {
            let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
            let response = raw_exchange(server.addr, request.as_bytes()).await;
            let status = raw_status(&response);
            assert!(
                !response.contains(SOURCE_MARKER) && !response.contains(OUTSIDE_MARKER),
                "{mode:?} {path}: leaked\n{response}"
            );
            let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
            let ran_a_script = status == 200 && (body == "FRONT" || body.starts_with("PAGE "));
            assert!(
                matches!(status, 400 | 403 | 404) || ran_a_script,
                "{mode:?} {path}: {status}\n{response}"
            );
        }
        assert_eq!(
            server.get(Proto::Http1, "/page.php").await.status(),
            StatusCode::OK,
            "{mode:?}: the server still serves"
        );
    }
}

/// A raw request and the status it must get.
struct Case {
    what: &'static str,
    request: &'static str,
    status: u16,
}

const MALFORMED: &[Case] = &[
    Case { what: "not HTTP", request: "THIS IS NOT HTTP\r\n\r\n", status: 400 },
    Case { what: "header without colon", request: "GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n", status: 400 },
    Case { what: "space before colon", request: "GET / HTTP/1.1\r\nHost : t\r\n\r\n", status: 400 },
    Case { what: "obs-fold", request: "GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n", status: 400 },
    Case { what: "NUL in a header", request: "GET / HTTP/1.1\r\nHost: t\r\nX-A: a\0b\r\n\r\n", status: 400 },
    Case { what: "two Content-Lengths", request: "POST /page.php HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", status: 400 },
    Case { what: "negative Content-Length", request: "POST /page.php HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", status: 400 },
    Case { what: "signed Content-Length", request: "POST /page.php HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nhello", status: 400 },
    Case { what: "Content-Length overflow", request: "POST /page.php HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999999\r\n\r\n", status: 400 },
    Case { what: "gzip, chunked", request: "POST /page.php HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", status: 501 },
    Case { what: "gzip then chunked on two lines", request: "POST /page.php HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", status: 501 },
    Case { what: "chunked, chunked", request: "POST /page.php HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", status: 400 },
    Case { what: "chunked not last", request: "POST /page.php HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", status: 400 },
    Case { what: "invalid chunk size", request: "POST /page.php HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", status: 400 },
    Case { what: "missing Host", request: "GET /page.php HTTP/1.1\r\n\r\n", status: 400 },
    Case { what: "two Hosts", request: "GET /page.php HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n", status: 400 },
    Case { what: "a Host list", request: "GET /page.php HTTP/1.1\r\nHost: a.test, b.test\r\n\r\n", status: 400 },
    Case { what: "Host with user info", request: "GET /page.php HTTP/1.1\r\nHost: user@a.test\r\n\r\n", status: 400 },
    Case { what: "Host with a path", request: "GET /page.php HTTP/1.1\r\nHost: a.test/x\r\n\r\n", status: 400 },
    Case { what: "Host with a bad port", request: "GET /page.php HTTP/1.1\r\nHost: a.test:http\r\n\r\n", status: 400 },
    Case { what: "empty Host", request: "GET /page.php HTTP/1.1\r\nHost:\r\n\r\n", status: 400 },
    Case { what: "HTTP/1.0 without Host", request: "GET /page.php HTTP/1.0\r\n\r\n", status: 200 },
    Case { what: "OPTIONS *", request: "OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n", status: 200 },
    Case { what: "GET *", request: "GET * HTTP/1.1\r\nHost: t\r\n\r\n", status: 400 },
    Case { what: "bad method token", request: "G(T /page.php HTTP/1.1\r\nHost: t\r\n\r\n", status: 400 },
    // hyper's parser knows HTTP/1.0 and 1.1 only (RFC 9112 would read 1.7 as 1.1).
    Case { what: "unknown minor version", request: "GET /page.php HTTP/1.7\r\nHost: t\r\n\r\n", status: 400 },
    Case { what: "CONNECT", request: "CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n", status: 400 },
    Case { what: "space in target", request: "GET /pa ge.php HTTP/1.1\r\nHost: t\r\n\r\n", status: 400 },
    Case { what: "relative target", request: "GET page.php HTTP/1.1\r\nHost: t\r\n\r\n", status: 400 },
    Case { what: "bare LF line ends", request: "GET /page.php HTTP/1.1\nHost: t\n\n", status: 200 },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_the_status_http_requires_and_the_next_request_works() {
    let dir = probe_root();
    let server = probe_server(dir.path(), Mode::TryFiles).await;
    let mut wrong = Vec::new();
    for case in MALFORMED {
        let response = raw_exchange(server.addr, case.request.as_bytes()).await;
        let status = if response.is_empty() {
            0
        } else {
            raw_status(&response)
        };
        if status != case.status {
            wrong.push(format!(
                "{}: {status}, expected {}\n{response}",
                case.what, case.status
            ));
        }
        assert_eq!(
            server.get(Proto::Http1, "/page.php").await.status(),
            StatusCode::OK,
            "after {}",
            case.what
        );
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n---\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_close_the_connection_and_options_announces_the_methods() {
    let dir = probe_root();
    let server = probe_server(dir.path(), Mode::FilesOnly).await;
    let refused = raw_exchange(
        server.addr,
        b"GET /page.php HTTP/1.1\r\nHost: a, b\r\n\r\nGET /page.php HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&refused), 400);
    assert!(
        refused.to_ascii_lowercase().contains("connection: close"),
        "{refused}"
    );
    assert_eq!(
        refused.matches("HTTP/1.1 ").count(),
        1,
        "nothing after a refusal: {refused}"
    );

    let options = raw_exchange(
        server.addr,
        b"OPTIONS * HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&options), 200, "{options}");
    assert!(options.contains("allow: GET, HEAD, POST"), "{options}");
    assert!(options.contains("content-length: 0"), "{options}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_form_target_wins_over_the_host_header() {
    let dir = probe_root();
    let server = probe_server(dir.path(), Mode::FilesOnly).await;
    let response = raw_exchange(
        server.addr,
        b"GET http://target.test:8080/page.php HTTP/1.1\r\nHost: header.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&response), 200, "{response}");
    assert!(response.ends_with("PAGE target.test:8080"), "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_ranges_get_the_whole_file_and_one_range_its_part() {
    let dir = probe_root();
    let server = probe_server(dir.path(), Mode::FilesOnly).await;
    let get = |range: &'static str| {
        let request = format!(
            "GET /static/style.css HTTP/1.1\r\nHost: t\r\nRange: {range}\r\nConnection: close\r\n\r\n"
        );
        let addr = server.addr;
        async move { raw_exchange(addr, request.as_bytes()).await }
    };
    let one = get("bytes=0-3").await;
    assert_eq!(raw_status(&one), 206, "{one}");
    assert!(one.ends_with("\r\n\r\nbody"), "{one}");
    let several = get("bytes=0-1, 3-4").await;
    assert_eq!(raw_status(&several), 200, "{several}");
    assert!(several.ends_with("\r\n\r\nbody{}"), "{several}");
}
