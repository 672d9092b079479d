//! php-src's own `tests/basic/` (HTTP-flavoured .phpt tests of request parsing, uploads, headers
//! and output) run against a real tokio_php. Every test passes, is skipped with a reason, or is a
//! known failure explained in docs/phpt.md; anything else fails this test.

mod common;
mod phpt;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::{Proto, TestServer};
use http::Request;
use http_body_util::Full;
use phpt::{Outcome, Phpt};
use tokio_php::{
    http::{DocumentRoot, PhpIni},
    php::{PhpService, PhpServiceConfig, PoolConfig},
};

/// Tests that fail for a reason that is not a tokio_php bug, with the reason (see docs/phpt.md).
const KNOWN_FAILURES: &[(&str, &str)] = &[
    (
        "req60524.phpt",
        "its --INI-- sets sys_temp_dir, a PHP_INI_SYSTEM directive: per-request ini acts at the \
         per-directory level (like .user.ini), so it is refused; set it server-wide with PHP_INI_*",
    ),
    (
        "rfc1867_file_upload_disabled.phpt",
        "its --INI-- sets file_uploads, a PHP_INI_SYSTEM directive: refused per request as above",
    ),
];

type IniByTest = Arc<Mutex<HashMap<String, Vec<(String, String)>>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_src_basic_tests_pass_or_have_a_documented_reason() {
    let source = phpt::php_source_tests("tests/basic");
    // php-src's layout, served from tests/basic with the top directory as the working directory
    // (run-tests.php's): some tests name paths such as ./tests/basic/ in their --INI--.
    let top = tempfile::tempdir().unwrap();
    let basic = top.path().join("tests/basic");
    std::fs::create_dir_all(&basic).unwrap();
    for entry in std::fs::read_dir(&source).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), basic.join(entry.file_name())).unwrap();
    }
    std::env::set_current_dir(top.path()).unwrap(); // this test is alone in its binary
    let root = &basic;
    let ini_by_test: IniByTest = Arc::default();
    let lookup = ini_by_test.clone();
    let docroot = DocumentRoot::new(root).unwrap();
    let server = TestServer::serve(
        PoolConfig {
            workers: 2,
            ..PoolConfig::default()
        },
        move |pool| {
            let php = PhpService::new(pool, PhpServiceConfig::new(docroot));
            tower::ServiceBuilder::new()
                .map_request(move |mut request: Request<hyper::body::Incoming>| {
                    let id = request
                        .headers()
                        .get("x-phpt-id")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    if let Some(ini) = id.and_then(|id| lookup.lock().unwrap().get(&id).cloned()) {
                        let entries = request.extensions_mut().get_or_insert_default::<PhpIni>();
                        for (name, value) in ini {
                            entries.insert(name, value);
                        }
                    }
                    request
                })
                .service(php)
        },
    )
    .await;

    let mut names: Vec<_> = std::fs::read_dir(&source)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "phpt"))
        .collect();
    names.sort();
    let mut outcomes = BTreeMap::new();
    for path in names {
        let test = Phpt::parse(&path);
        let outcome = run(&server, &test, root, &ini_by_test).await;
        outcomes.insert(test.name.clone(), outcome);
    }

    let count = |f: fn(&Outcome) -> bool| outcomes.values().filter(|o| f(o)).count();
    println!(
        "php-src tests/basic: {} passed, {} failed, {} skipped, {} expected failures",
        count(|o| matches!(o, Outcome::Pass)),
        count(|o| matches!(o, Outcome::Fail(_))),
        count(|o| matches!(o, Outcome::Skip(_))),
        count(|o| matches!(o, Outcome::ExpectedFail)),
    );
    let mut unexpected = Vec::new();
    for (name, outcome) in &outcomes {
        match outcome {
            Outcome::Skip(reason) => println!("SKIP {name}: {reason}"),
            Outcome::ExpectedFail => println!("XFAIL {name}"),
            Outcome::Fail(why) => match KNOWN_FAILURES.iter().find(|(known, _)| known == name) {
                Some((_, reason)) => println!("KNOWN FAILURE {name}: {reason}"),
                None => unexpected.push(format!("FAIL {name}\n{why}\n")),
            },
            Outcome::Pass => {}
        }
    }
    assert!(
        unexpected.is_empty(),
        "{} unexpected failures:\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );
}

async fn run(
    server: &TestServer,
    test: &Phpt,
    root: &std::path::Path,
    ini_by_test: &IniByTest,
) -> Outcome {
    if let Some(reason) = test.unsupported() {
        return Outcome::Skip(reason);
    }
    let stem = test.name.trim_end_matches(".phpt").to_string();
    let mut ini: Vec<(String, String)> = phpt::RUN_TESTS_INI
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ini.extend(test.ini(root));
    ini_by_test.lock().unwrap().insert(stem.clone(), ini);

    if let Some(skipif) = test.section("SKIPIF") {
        std::fs::write(root.join(format!("{stem}.skip.php")), skipif).unwrap();
        let response = send(
            server,
            &stem,
            Request::get(format!("/{stem}.skip.php")),
            Vec::new(),
        )
        .await;
        let said = String::from_utf8_lossy(response.body()).trim().to_string();
        if said.to_ascii_lowercase().starts_with("skip") {
            return Outcome::Skip(format!("--SKIPIF--: {said}"));
        }
    }
    std::fs::write(
        root.join(format!("{stem}.php")),
        test.section("FILE").unwrap(),
    )
    .unwrap();
    let phpt_request = test.request();
    let mut uri = format!("/{stem}.php");
    if !phpt_request.query.is_empty() {
        uri.push('?');
        uri.push_str(&phpt_request.query);
    }
    let mut request = Request::builder()
        .method(phpt_request.method.as_str())
        .uri(uri);
    if let Some(cookie) = &phpt_request.cookie {
        request = request.header("cookie", http::HeaderValue::from_bytes(cookie).unwrap());
    }
    if let Some(content_type) = &phpt_request.content_type {
        request = request.header("content-type", content_type);
    }
    let response = send(server, &stem, request, phpt_request.body).await;
    match phpt::check(test, response.body(), response.headers()) {
        Ok(()) => Outcome::Pass,
        Err(_) if test.sections.contains_key("XFAIL") => Outcome::ExpectedFail,
        Err(why) => Outcome::Fail(why),
    }
}

async fn send(
    server: &TestServer,
    id: &str,
    request: http::request::Builder,
    body: Vec<u8>,
) -> http::Response<Bytes> {
    let request = request
        .header("x-phpt-id", id)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    common::send(server.addr, Proto::Http1, request).await
}
