//! Differential check: the same scripts, the same requests, through nginx + php-fpm and through
//! tokio_php, in each routing mode with its nginx equivalent — plain (`location ~ \.php`),
//! `TRY_FILES` (nginx's `try_files $uri $uri/ /index.php?$args`) and `INDEX_FILE` (Symfony's
//! recipe). What PHP sees (`$_SERVER` minus volatile keys, `$_GET`, `$_POST`, `$_COOKIE`,
//! `$_FILES`, `$_REQUEST`, `php://input`), the response status, headers, redirect target and
//! static bodies must agree, except for the differences listed (with their reasons) in
//! docs/fpm-differences.md. nginx and php-fpm must be installed (`scripts/install-deps.sh`).

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Proto, TestServer};
use http::{Request, Response};
use http_body_util::Full;
use serde_json::Value;
use tokio_php::stack::{self, StackConfig};
use tokio_php::{
    http::DocumentRoot,
    php::{PhpService, PhpServiceConfig, PoolConfig},
};

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
    "server.TRACE_ID",
    "server.SPAN_ID",
    "server.PARENT_SPAN_ID",
    "server.HTTP_TRACEPARENT",
    "server.HTTP_TRACESTATE",
    "server.HTTP_X_REQUEST_ID",
];

/// The PHP location every nginx configuration below shares: Debian's stock `fastcgi_params`
/// plus the usual `SCRIPT_FILENAME` and `PATH_INFO` lines.
const PHP_LOCATION: &str = "fastcgi_split_path_info ^(.+\\.php)(/.*)$;
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
      fastcgi_param PATH_INFO $fastcgi_path_info;
      fastcgi_pass unix:{socket};";

/// A routing mode of tokio_php and the nginx `server` block that behaves the same.
struct Mode {
    name: &'static str,
    nginx_locations: String,
    try_files: Option<&'static str>,
    index_file: Option<&'static str>,
}

/// Without TRY_FILES or INDEX_FILE: scripts run, files and directory indexes are served, the
/// rest is 404 — nginx's static handling beside a `\.php` location.
fn plain_mode() -> Mode {
    Mode {
        name: "plain",
        nginx_locations: format!(
            "index index.php index.html;\n    location ~ \\.php(/|$) {{\n      {PHP_LOCATION}\n    }}"
        ),
        try_files: None,
        index_file: None,
    }
}

/// `TRY_FILES` with the rule WordPress, Drupal and Laravel document for nginx.
fn try_files_mode() -> Mode {
    Mode {
        name: "try_files",
        nginx_locations: format!(
            "index index.php index.html;\n    location / {{\n      try_files $uri $uri/ /index.php?$args;\n    }}\n    \
             location ~ \\.php(/|$) {{\n      {PHP_LOCATION}\n    }}"
        ),
        try_files: Some("$uri $uri/ /index.php?$args"),
        index_file: None,
    }
}

/// `INDEX_FILE`: Symfony's nginx recipe — static files, else the front controller, which is
/// `internal`; other scripts are not run.
fn index_file_mode() -> Mode {
    Mode {
        name: "index_file",
        nginx_locations: format!(
            "location / {{\n      try_files $uri /index.php$is_args$args;\n    }}\n    \
             location ~ ^/index\\.php(/|$) {{\n      {PHP_LOCATION}\n      internal;\n    }}\n    \
             location ~ \\.php$ {{\n      return 404;\n    }}"
        ),
        try_files: None,
        index_file: Some("index.php"),
    }
}

/// The document root both servers serve: the dump script under several names, a directory with
/// an index script, one with an index page, one with neither, and a static file.
fn docroot() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let dump = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/diff/dump.php");
    for sub in ["dir", "htmldir", "emptydir"] {
        std::fs::create_dir(root.join(sub)).unwrap();
    }
    for script in ["dump.php", "index.php", "other.php", "dir/index.php"] {
        std::fs::copy(&dump, root.join(script)).unwrap();
    }
    std::fs::write(root.join("htmldir/index.html"), "<h1>an index page</h1>\n").unwrap();
    std::fs::write(root.join("a.txt"), "a static file\n").unwrap();
    dir
}

/// nginx + php-fpm as Debian runs them (FastCGI over a unix socket, the stock fastcgi_params),
/// with php.ini settings matching tokio_php's defaults so only server behaviour differs.
struct Fpm {
    children: Vec<Child>,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Fpm {
    fn start(root: &Path, mode: &Mode) -> Fpm {
        let fpm = common::require_one_of(
            &["php-fpm8.2", "php-fpm8.3", "php-fpm8.4", "php-fpm"],
            "Debian package php8.2-fpm",
        );
        let nginx = common::require_program("nginx", "Debian package nginx");
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path();
        let port = common::free_port();
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
        let locations = mode
            .nginx_locations
            .replace("{socket}", &socket.display().to_string());
        std::fs::write(
            run.join("nginx.conf"),
            format!(
                "daemon off;\npid {run}/nginx.pid;\nerror_log {run}/nginx.log;\nuser root;\n\
                 events {{}}\nhttp {{\n  access_log off;\n  include /etc/nginx/mime.types;\n  \
                 client_body_temp_path {run}/body;\n  fastcgi_temp_path {run}/fcgi;\n  \
                 proxy_temp_path {run}/proxy;\n  uwsgi_temp_path {run}/uwsgi;\n  scgi_temp_path {run}/scgi;\n  \
                 server {{\n    listen 127.0.0.1:{port};\n    server_name diff.test;\n    root {root};\n    \
                 {locations}\n  }}\n}}\n",
                run = run.display(),
                root = root.display(),
            ),
        )
        .unwrap();
        let quiet = || Stdio::null();
        let children = vec![
            Command::new(&fpm)
                .args(["-R", "-F", "-n", "-y"])
                .arg(run.join("fpm.conf"))
                .stdout(quiet())
                .stderr(quiet())
                .spawn()
                .unwrap(),
            Command::new(&nginx)
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
            assert!(
                Instant::now() < deadline,
                "nginx and php-fpm start; nginx says: {}",
                std::fs::read_to_string(run.join("nginx.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Fpm {
            children,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for Fpm {
    fn drop(&mut self) {
        for child in &mut self.children {
            common::process::stop_peer(child, Duration::from_secs(10));
        }
    }
}

/// tokio_php's whole stack in this mode over the same root.
async fn tokio_php(root: &Path, mode: &Mode) -> TestServer {
    let document_root = DocumentRoot::new(root).unwrap();
    let config = StackConfig {
        document_root: Some(document_root.clone()),
        try_files: mode.try_files.map(|rule| rule.parse().unwrap()),
        index_file: mode.index_file.map(str::to_string),
        ..common::stack_config()
    };
    TestServer::serve(
        PoolConfig {
            workers: 1,
            ..PoolConfig::default()
        },
        move |pool| {
            let php = PhpService::new(pool, PhpServiceConfig::new(document_root));
            stack::build(&config, php).unwrap()
        },
    )
    .await
}

/// One request, described once and sent to both servers.
struct Case {
    name: &'static str,
    method: &'static str,
    uri: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body: Vec<u8>,
}

fn get(uri: &'static str) -> Case {
    Case {
        name: uri,
        method: "GET",
        uri,
        headers: vec![],
        body: vec![],
    }
}

/// What a request carries: query arrays, bodies, uploads, cookies, headers.
fn request_cases() -> Vec<Case> {
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
            ..get("/dump.php?a=1&b[]=x&b[]=y&c%20d=%C3%A9&e.f=2&empty=")
        },
        Case {
            name: "path info",
            ..get("/dump.php/extra/path?x=1")
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
            headers: vec![
                ("cookie", "a=1; b=two%20words; c"),
                ("x-custom-header", "custom"),
                ("x_underscored", "dropped by nginx"),
                ("user-agent", "diff-test"),
                ("accept", "text/html"),
                ("authorization", "Basic dXNlcjpwYXNz"),
            ],
            ..get("/dump.php")
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
            ..get("/dump.php?status=201&header=yes")
        },
    ]
}

/// Where requests go: the root, routes, existing and missing scripts, `PATH_INFO`, directories
/// with and without their slash and index, static and missing files, encoded paths.
fn routing_cases() -> Vec<Case> {
    [
        "/",
        "/?a=1&b[]=2",
        "/some/route?x=1&y=2",
        "/some/route/",
        "/sp%20ace/r%C3%A9?q=%20x",
        "/other.php",
        "/other.php?q=1",
        "/index.php",
        "/index.php?a=1",
        "/other.php/extra/path?z=1",
        "/dir/index.php/x",
        "/missing.php",
        "/missing.php/x",
        "/dir",
        "/dir?k=v",
        "/dir/",
        "/dir/?k=v",
        "/htmldir/",
        "/emptydir/",
        "/a.txt",
        "/a.txt?v=2",
        "/missing.txt",
    ]
    .into_iter()
    .map(get)
    .collect()
}

/// The routing cases that mean the same under a strict front controller and Symfony's recipe:
/// other scripts are unreachable in both, but tokio_php runs the front controller for them
/// where the recipe answers 404.
fn front_controller_cases() -> Vec<Case> {
    routing_cases()
        .into_iter()
        .filter(|case| !case.uri.contains(".php"))
        .collect()
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

/// Flattens the response into comparable `path → value` pairs: the status, the headers a
/// script sets, a redirect's target, a static body, and everything the dump script saw.
/// Error bodies are the servers' own wording and are not compared.
fn observe(response: &Response<Bytes>) -> BTreeMap<String, Value> {
    let mut seen = BTreeMap::new();
    let status = response.status();
    seen.insert("status".into(), Value::from(status.as_u16()));
    for name in ["x-diff", "x-multi", "set-cookie"] {
        let values: Vec<_> = response
            .headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        seen.insert(format!("header.{name}"), Value::from(values));
    }
    if let Some(location) = response.headers().get("location") {
        // nginx makes it absolute, tokio_php leaves it relative: compare the path and query.
        let location = location.to_str().unwrap();
        let path = location.strip_prefix("http://").map_or(location, |rest| {
            &rest[rest.find('/').unwrap_or(rest.len())..]
        });
        seen.insert("header.location".into(), Value::from(path));
    }
    if !status.is_success() {
        return seen;
    }
    let content_type = response.headers().get("content-type").map(|v| {
        let v = v.to_str().unwrap();
        v.split(';').next().unwrap().trim().to_string()
    });
    seen.insert(
        "header.content-type".into(),
        Value::from(content_type.clone()),
    );
    if content_type.as_deref() != Some("application/json") {
        seen.insert(
            "body".into(),
            Value::from(String::from_utf8_lossy(response.body()).into_owned()),
        );
        return seen;
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

/// Sends every case to nginx + php-fpm and to tokio_php in `mode`; fails listing every
/// undocumented difference.
async fn compare(mode: Mode, cases: Vec<Case>) {
    let root = docroot();
    let fpm = Fpm::start(root.path(), &mode);
    let ours = tokio_php(root.path(), &mode).await;
    let mut report = Vec::new();
    for case in cases {
        let theirs = observe(&send(fpm.addr, &case).await);
        let mine = observe(&send(ours.addr, &case).await);
        for (known, difference) in differences(&theirs, &mine) {
            if known {
                println!(
                    "known difference [{} {}] {difference}",
                    mode.name, case.name
                );
            } else {
                report.push(format!("[{} {}] {difference}", mode.name, case.name));
            }
        }
    }
    assert!(
        report.is_empty(),
        "{} differences from nginx + php-fpm:\n{}",
        report.len(),
        report.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_sees_the_same_request_as_under_php_fpm() {
    let mut cases = request_cases();
    cases.extend(routing_cases());
    compare(plain_mode(), cases).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_files_routes_and_names_scripts_as_nginx_try_files() {
    let mut cases = routing_cases();
    cases.extend(request_cases());
    compare(try_files_mode(), cases).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_front_controller_sees_what_symfony_s_nginx_recipe_gives() {
    compare(index_file_mode(), front_controller_cases()).await;
}
