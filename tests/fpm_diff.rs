//! Differential check: the same script, the same requests, through nginx + php-fpm and through
//! tokio_php. What PHP sees (`$_SERVER` minus volatile keys, `$_GET`, `$_POST`, `$_COOKIE`,
//! `$_FILES`, `$_REQUEST`, `php://input`), the response status and headers must agree, except for
//! the differences listed (with their reasons) in docs/fpm-differences.md.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Proto, TestServer};
use http::{Request, Response};
use http_body_util::Full;
use serde_json::Value;
use tokio_php::php::{DocumentRoot, PhpService, PhpServiceConfig, PoolConfig};

/// `$_SERVER` keys that differ between any two requests or servers by nature.
const VOLATILE: &[&str] = &[
    "REMOTE_PORT",
    "REQUEST_TIME",
    "REQUEST_TIME_FLOAT",
    "SERVER_PORT",
    "HTTP_HOST",
];

/// Differences that are deliberate, each explained in docs/fpm-differences.md.
const KNOWN: &[&str] = &[
    "server.SERVER_SOFTWARE",
    "server.TOKIO_SERVER_BUILD_VERSION",
    "server.FCGI_ROLE",
    "server.USER",
    "server.HOME",
];

fn docroot() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/diff")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// nginx + php-fpm as Debian runs them (FastCGI over a unix socket, the stock fastcgi_params),
/// with php.ini settings matching tokio_php's defaults so only server behaviour differs.
struct Fpm {
    children: Vec<Child>,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Fpm {
    fn start() -> Option<Fpm> {
        let fpm = ["php-fpm8.2", "php-fpm8.3", "php-fpm8.4", "php-fpm"]
            .into_iter()
            .find(|b| {
                Command::new(b)
                    .arg("-v")
                    .output()
                    .is_ok_and(|o| o.status.success())
            })?;
        Command::new("nginx").arg("-v").output().ok()?;
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path();
        let port = free_port();
        let socket = run.join("fpm.sock");
        std::fs::write(
            run.join("fpm.conf"),
            format!(
                "[global]\npid = {run}/fpm.pid\nerror_log = {run}/fpm.log\ndaemonize = no\n\
                 [diff]\nuser = root\ngroup = root\nlisten = {socket}\nlisten.mode = 0666\n\
                 pm = static\npm.max_children = 1\nclear_env = yes\n\
                 php_admin_flag[expose_php] = off\nphp_admin_flag[display_errors] = off\n\
                 php_admin_value[variables_order] = GPCS\nphp_admin_value[request_order] = GP\n\
                 php_admin_value[output_buffering] = 0\nphp_admin_flag[register_argc_argv] = off\n",
                run = run.display(),
                socket = socket.display()
            ),
        )
        .unwrap();
        std::fs::write(
            run.join("nginx.conf"),
            format!(
                "daemon off;\npid {run}/nginx.pid;\nerror_log {run}/nginx.log;\nuser root;\n\
                 events {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {run}/body;\n\
                 fastcgi_temp_path {run}/fcgi;\n  proxy_temp_path {run}/proxy;\n  uwsgi_temp_path {run}/uwsgi;\n\
                 scgi_temp_path {run}/scgi;\n  server {{\n    listen 127.0.0.1:{port};\n    server_name diff.test;\n\
                 root {root};\n    location ~ \\.php(/|$) {{\n      fastcgi_split_path_info ^(.+\\.php)(/.*)$;\n\
                 include /etc/nginx/fastcgi_params;\n      fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;\n\
                 fastcgi_param PATH_INFO $fastcgi_path_info;\n      fastcgi_pass unix:{socket};\n    }}\n  }}\n}}\n",
                run = run.display(),
                root = docroot().display(),
                socket = socket.display()
            ),
        )
        .unwrap();
        let quiet = || Stdio::null();
        let children = vec![
            Command::new(fpm)
                .args(["-R", "-F", "-n", "-y"])
                .arg(run.join("fpm.conf"))
                .stdout(quiet())
                .stderr(quiet())
                .spawn()
                .unwrap(),
            Command::new("nginx")
                .arg("-c")
                .arg(run.join("nginx.conf"))
                .stdout(quiet())
                .stderr(quiet())
                .spawn()
                .unwrap(),
        ];
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() || !socket.exists() {
            assert!(Instant::now() < deadline, "nginx and php-fpm start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Fpm {
            children,
            addr,
            _dir: dir,
        })
    }
}

impl Drop for Fpm {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One request, described once and sent to both servers.
struct Case {
    name: &'static str,
    method: &'static str,
    uri: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body: Vec<u8>,
}

fn cases() -> Vec<Case> {
    let boundary = "diffboundary";
    let multipart = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhello\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"files[]\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nAAA\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"files[]\"; filename=\"b.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n\x00\x01\x02\r\n\
         --{boundary}--\r\n"
    );
    vec![
        Case {
            name: "get with arrays",
            method: "GET",
            uri: "/dump.php?a=1&b[]=x&b[]=y&c%20d=%C3%A9&e.f=2&empty=",
            headers: vec![],
            body: vec![],
        },
        Case {
            name: "path info",
            method: "GET",
            uri: "/dump.php/extra/path?x=1",
            headers: vec![],
            body: vec![],
        },
        Case {
            name: "urlencoded post",
            method: "POST",
            uri: "/dump.php?q=query",
            headers: vec![("content-type", "application/x-www-form-urlencoded")],
            body: b"x=1&y[k]=v&z=hello+world%21&q=post".to_vec(),
        },
        Case {
            name: "multipart",
            method: "POST",
            uri: "/dump.php",
            headers: vec![("content-type", "multipart/form-data; boundary=diffboundary")],
            body: multipart.into_bytes(),
        },
        Case {
            name: "cookies and headers",
            method: "GET",
            uri: "/dump.php",
            headers: vec![
                ("cookie", "a=1; b=two%20words; c"),
                ("x-custom-header", "custom"),
                ("x_underscored", "dropped by nginx"),
                ("user-agent", "diff-test"),
                ("accept", "text/html"),
                ("authorization", "Basic dXNlcjpwYXNz"),
            ],
            body: vec![],
        },
        Case {
            name: "json put",
            method: "PUT",
            uri: "/dump.php",
            headers: vec![("content-type", "application/json")],
            body: br#"{"k":"v"}"#.to_vec(),
        },
        Case {
            name: "status and headers",
            method: "GET",
            uri: "/dump.php?status=201&header=yes",
            headers: vec![],
            body: vec![],
        },
    ]
}

async fn send(addr: SocketAddr, case: &Case) -> Response<Bytes> {
    let mut request = Request::builder()
        .method(case.method)
        .uri(case.uri)
        .header("host", "diff.test");
    for (name, value) in &case.headers {
        request = request.header(*name, *value);
    }
    common::send(
        addr,
        Proto::Http1,
        request
            .body(Full::new(Bytes::from(case.body.clone())))
            .unwrap(),
    )
    .await
}

/// Flattens the response into comparable `path → value` pairs.
fn observe(response: &Response<Bytes>) -> BTreeMap<String, Value> {
    let mut seen = BTreeMap::new();
    seen.insert("status".into(), Value::from(response.status().as_u16()));
    for name in ["content-type", "x-diff", "x-multi", "set-cookie"] {
        let values: Vec<_> = response
            .headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        seen.insert(format!("header.{name}"), Value::from(values));
    }
    let dump: Value = serde_json::from_slice(response.body()).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(response.body())
        )
    });
    for (section, value) in dump.as_object().unwrap() {
        match (section.as_str(), value.as_object()) {
            ("server", Some(vars)) => {
                for (key, value) in vars {
                    if !VOLATILE.contains(&key.as_str()) {
                        seen.insert(format!("server.{key}"), value.clone());
                    }
                }
            }
            _ => {
                seen.insert(section.clone(), value.clone());
            }
        }
    }
    seen
}

/// Every difference, each marked known (documented) or not.
fn differences(
    fpm: &BTreeMap<String, Value>,
    ours: &BTreeMap<String, Value>,
) -> Vec<(bool, String)> {
    let keys: std::collections::BTreeSet<_> = fpm.keys().chain(ours.keys()).collect();
    keys.into_iter()
        .filter(|key| fpm.get(*key) != ours.get(*key))
        .map(|key| {
            let known = KNOWN.contains(&key.as_str());
            (
                known,
                format!(
                    "{key}: php-fpm {:?} vs tokio_php {:?}",
                    fpm.get(key),
                    ours.get(key)
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_sees_the_same_request_as_under_php_fpm() {
    let Some(fpm) = Fpm::start() else {
        eprintln!(
            "skipped: nginx or php-fpm is not installed (scripts/install-deps.sh installs them)"
        );
        return;
    };
    let ours = TestServer::serve(
        PoolConfig {
            workers: 1,
            ..PoolConfig::default()
        },
        |pool| {
            PhpService::new(
                pool,
                PhpServiceConfig::new(DocumentRoot::new(docroot()).unwrap()),
            )
        },
    )
    .await;
    let mut report = Vec::new();
    for case in cases() {
        let theirs = observe(&send(fpm.addr, &case).await);
        let mine = observe(&send(ours.addr, &case).await);
        for (known, difference) in differences(&theirs, &mine) {
            if known {
                println!("known difference [{}] {difference}", case.name);
            } else {
                report.push(format!("[{}] {difference}", case.name));
            }
        }
    }
    assert!(
        report.is_empty(),
        "{} differences from php-fpm:\n{}",
        report.len(),
        report.join("\n")
    );
}
