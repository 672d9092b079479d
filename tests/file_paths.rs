//! PHP's file system functions answer in tokio_php as they do in php-fpm's PHP.
//!
//! tokio_php's PHP is thread-safe, so each worker thread has its own working directory, and PHP
//! resolved paths against it in user space before the system call; scripts/build-php.sh's patch
//! 0007 hands the kernel the path itself (joined to that directory when relative), as the
//! non-thread-safe build does. This test runs `tests/fixtures/paths/probe.php` — `file_exists`,
//! `is_file`, `stat`, `realpath`, `fopen` and friends on relative and absolute paths, symlinks,
//! missing and deleted files — from two directories at once on every worker, and compares each
//! answer with Debian's non-thread-safe PHP (the `php8.2` CLI) run in the same directory.

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{json, send, Proto, TestServer};
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::Value;
use tokio_php::{
    http::DocumentRoot,
    php::{PhpService, PhpServiceConfig, PoolConfig},
};

const PROBE: &str = include_str!("fixtures/paths/probe.php");
const DIRECTORIES: [&str; 2] = ["a", "b"];
const REQUESTS_PER_DIRECTORY: usize = 12;

/// `root/{a,b}` with the probe, a file whose contents name its directory, a nested directory,
/// a symlink and a dangling one; `root/shared.txt` beside them.
fn build_tree(root: &Path) {
    std::fs::write(root.join("shared.txt"), "shared\n").unwrap();
    for name in DIRECTORIES {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("dir")).unwrap();
        std::fs::write(dir.join("probe.php"), PROBE).unwrap();
        std::fs::write(dir.join("file.txt"), format!("in {name}\n")).unwrap();
        std::fs::write(dir.join("dir/nested.txt"), format!("nested in {name}\n")).unwrap();
        symlink("file.txt", dir.join("link")).unwrap();
        symlink("nowhere.txt", dir.join("dangling")).unwrap();
    }
}

/// The probe's answers from Debian's non-thread-safe PHP, run where php-fpm would run it: in
/// the script's directory.
fn reference_answers(dir: &Path) -> Value {
    let php = common::require_program("php8.2", "Debian package php8.2-cli");
    let output = Command::new(php)
        .args(["-n", "probe.php"])
        .current_dir(dir)
        .output()
        .expect("Debian's php8.2 CLI runs");
    assert!(output.status.success(), "php8.2 probe.php: {output:?}");
    serde_json::from_slice(&output.stdout).expect("the probe prints JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_functions_answer_as_in_php_fpm_on_every_worker_at_once() {
    let root = tempfile::tempdir().unwrap();
    build_tree(root.path());
    let expected: Vec<Value> = DIRECTORIES
        .iter()
        .map(|name| reference_answers(&root.path().join(name)))
        .collect();
    let docroot = DocumentRoot::new(root.path()).unwrap();
    let server = TestServer::serve(
        PoolConfig {
            workers: 2,
            ..PoolConfig::default()
        },
        move |pool| PhpService::new(pool, PhpServiceConfig::new(docroot)),
    )
    .await;

    // Interleaved, so each worker keeps switching between the two working directories.
    let requests: Vec<_> = (0..REQUESTS_PER_DIRECTORY * DIRECTORIES.len())
        .map(|i| {
            let index = i % DIRECTORIES.len();
            let addr = server.addr;
            tokio::spawn(async move {
                let path = format!("/{}/probe.php", DIRECTORIES[index]);
                let request = Request::get(path).body(Full::default()).unwrap();
                (index, send(addr, Proto::Http1, request).await)
            })
        })
        .collect();
    for handle in requests {
        let (index, response) = tokio::time::timeout(Duration::from_secs(60), handle)
            .await
            .expect("every probe answers")
            .expect("the client task completes");
        assert_eq!(response.status(), StatusCode::OK);
        let answers = json(&response);
        let differences = differences(&answers, &expected[index]);
        assert!(
            differences.is_empty(),
            "in {}, tokio_php's answers differ from php-fpm's PHP:\n{}",
            DIRECTORIES[index],
            differences.join("\n")
        );
    }
}

/// One line per probe whose answers differ, with both answers.
fn differences(answers: &Value, reference: &Value) -> Vec<String> {
    let mut keys: Vec<&String> = reference.as_object().unwrap().keys().collect();
    keys.extend(answers.as_object().unwrap().keys());
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|key| answers[key.as_str()] != reference[key.as_str()])
        .map(|key| {
            format!(
                "{key}: tokio_php {} / php-fpm's PHP {}",
                answers[key.as_str()],
                reference[key.as_str()]
            )
        })
        .collect()
}
