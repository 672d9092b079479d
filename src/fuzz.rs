//! Entry points for fuzzing the code that takes outside input: each takes arbitrary bytes, feeds
//! them to one parser or converter, and panics when an invariant breaks. `fuzz/` runs them under
//! libFuzzer (`make fuzz`); `tests/fuzz_smoke.rs` runs them over seeds and pseudo-random input in
//! `make test`. Not a stable API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Version};

use crate::http::{ConnInfo, DocumentRoot, RequestBody, RequestId, Script, TraceContext};
use crate::layer::compression::AcceptEncoding;
use crate::layer::try_files::route::{self, looks_like_source, Mode, Route};
use crate::layer::try_files::TryFilesRule;
use crate::layer::validate_request;
use crate::php::request::{PhpRequest, ServerIdentity};

/// Splits fuzz input into fields at `\n`, so one input drives several values.
fn fields(data: &[u8]) -> Vec<&[u8]> {
    data.split(|&b| b == b'\n').collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A fixed document root for routing: scripts, a static file, a directory with an index, source
/// copies and dotfiles, and a secret beside the root. Created once per process.
fn fixture_root() -> &'static (PathBuf, DocumentRoot) {
    static ROOT: OnceLock<(PathBuf, DocumentRoot)> = OnceLock::new();
    ROOT.get_or_init(|| {
        let base = std::env::temp_dir().join(format!("tokio_php_fuzz_{}", std::process::id()));
        let root = base.join("www");
        for dir in ["app", "css", ".git"] {
            std::fs::create_dir_all(root.join(dir)).expect("fuzz fixture");
        }
        for file in [
            "index.php",
            "page.php",
            "app/index.php",
            "css/site.css",
            "page.php.bak",
            ".env",
            ".git/config",
        ] {
            std::fs::write(root.join(file), "x").expect("fuzz fixture");
        }
        std::fs::write(base.join("secret.txt"), "x").expect("fuzz fixture");
        let document_root = DocumentRoot::new(&root).expect("fuzz fixture");
        (root, document_root)
    })
}

fn modes(root: &DocumentRoot) -> [Mode; 3] {
    [
        Mode::Rule(TryFilesRule::files_only()),
        Mode::Rule("$uri $uri/ /index.php?$args".parse().expect("a valid rule")),
        Mode::FrontController(
            root.front_controller("index.php")
                .expect("index.php exists"),
        ),
    ]
}

/// Whatever path and query: a route stays inside the document root and never serves a dotfile
/// or a PHP source copy.
pub fn route_path(data: &[u8]) {
    let fields = fields(data);
    // hyper hands the router origin-form paths, which start with `/`.
    let mut path = text(fields.first().copied().unwrap_or_default());
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    let query = text(fields.get(1).copied().unwrap_or_default());
    let (root_path, root) = fixture_root();
    let real_root = std::fs::canonicalize(root_path).expect("the root exists");
    for mode in modes(root) {
        match route::route(root, &mode, &path, &query) {
            Route::Static(file) => assert_servable(&real_root, &file, &path),
            Route::Script(script) => {
                assert!(
                    script.filename.starts_with(root_path),
                    "{path:?} ran {:?}",
                    script.filename
                );
                assert!(script.script_name.starts_with('/'), "{path:?}");
            }
            Route::Redirect(location) => {
                assert!(location.starts_with('/'), "{path:?} -> {location:?}");
                let other_site = location.starts_with("//") || location.starts_with("/\\");
                assert!(!other_site, "{path:?} -> open redirect {location:?}");
                assert!(
                    HeaderValue::try_from(location.as_str()).is_ok(),
                    "{location:?}"
                );
            }
            Route::Status(_) => {}
        }
    }
}

fn assert_servable(real_root: &Path, file: &Path, path: &str) {
    assert!(file.starts_with(real_root), "{path:?} served {file:?}");
    let inside = file.strip_prefix(real_root).expect("checked above");
    for part in inside.iter() {
        let part = part.to_string_lossy();
        assert!(!part.starts_with('.'), "{path:?} served a dotfile {file:?}");
    }
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    assert!(!looks_like_source(&name), "{path:?} served source {file:?}");
    assert!(
        !name.ends_with(".php"),
        "{path:?} served a script's source {file:?}"
    );
}

/// A request built from fuzzed method, target, version and headers: validation never panics, and
/// what passes converts into a PHP request (or is refused for a NUL byte) without panicking.
pub fn request_to_sapi(data: &[u8]) {
    let fields = fields(data);
    let method =
        Method::from_bytes(fields.first().copied().unwrap_or(b"GET")).unwrap_or(Method::GET);
    let uri = text(fields.get(1).copied().unwrap_or(b"/"));
    let version = match fields.get(2).and_then(|v| v.first()) {
        Some(b'0') => Version::HTTP_10,
        Some(b'2') => Version::HTTP_2,
        _ => Version::HTTP_11,
    };
    let mut builder = Request::builder().method(method).uri(uri).version(version);
    for line in fields.iter().skip(3) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            builder = builder.header(name, value);
        }
    }
    let Ok(mut request) = builder.body(()) else {
        return;
    };
    if validate_request::check(&mut request) != validate_request::Verdict::Pass {
        return;
    }
    let (root_path, _) = fixture_root();
    let (parts, ()) = request.into_parts();
    let script = Script {
        script_name: "/index.php".into(),
        filename: root_path.join("index.php"),
        path_info: String::new(),
        query_string: None,
    };
    let addr: SocketAddr = "127.0.0.1:8080".parse().expect("an address");
    let conn = ConnInfo::tcp(addr, "127.0.0.1:50000".parse().expect("an address"));
    let identity = ServerIdentity {
        software: crate::http::SERVER_SOFTWARE.into(),
        document_root: root_path.display().to_string(),
    };
    if let Ok(mut php) = PhpRequest::new(&parts, &script, RequestBody::empty(), &conn, &identity) {
        let mut entries = Vec::new();
        let c_request = php.as_ffi(&mut entries, 1, std::ptr::null_mut());
        assert!(!c_request.method.is_null() && !c_request.request_uri.is_null());
        assert!(
            entries.iter().all(|entry| entry.key.len > 0),
            "a nameless $_SERVER entry"
        );
    }
}

/// `traceparent`, `tracestate` and `X-Request-ID` from fuzzed values: a trace context always
/// comes out, its `traceparent` is well formed, and an accepted request id is safe to log.
pub fn trace_headers(data: &[u8]) {
    let fields = fields(data);
    let mut headers = HeaderMap::new();
    for (name, value) in ["traceparent", "tracestate", "x-request-id"]
        .iter()
        .zip(&fields)
    {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.insert(*name, value);
        }
    }
    let context = TraceContext::from_headers(&headers);
    let traceparent = context.traceparent();
    assert_eq!(traceparent.len(), 55, "{traceparent}");
    assert!(traceparent.starts_with("00-"), "{traceparent}");
    let reparsed = {
        let mut again = HeaderMap::new();
        again.insert(
            "traceparent",
            HeaderValue::from_str(&traceparent).expect("ascii"),
        );
        TraceContext::from_headers(&again)
    };
    assert_eq!(
        reparsed.trace_id, context.trace_id,
        "{traceparent} does not round-trip"
    );
    if let Some(id) = fields.get(2).and_then(|v| std::str::from_utf8(v).ok()) {
        if let Some(id) = RequestId::parse(id) {
            assert!(id.as_str().bytes().all(|b| b.is_ascii_graphic()), "{id:?}");
        }
    }
    let derived = RequestId::derive(Some(&context));
    assert!(RequestId::parse(derived.as_str()).is_some(), "{derived:?}");
}

/// `Accept-Encoding` lines: q-values stay in 0..=1 and the preferred encoding is one the client
/// accepts.
pub fn accept_encoding(data: &[u8]) {
    let mut headers = HeaderMap::new();
    for line in fields(data) {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append(http::header::ACCEPT_ENCODING, value);
        }
    }
    let accepted = AcceptEncoding::from_headers(&headers);
    if let Some(encoding) = accepted.preferred() {
        let quality = accepted.quality(encoding);
        assert!(
            quality > 0.0 && quality <= 1.0,
            "{encoding:?} at q={quality}"
        );
    }
}

/// Configuration values as a user may type them: every parser answers `Ok` or a message,
/// never a panic.
pub fn config_values(data: &[u8]) {
    use crate::config;
    let value = text(data);
    let _ = config::parse_size(&value);
    let _ = config::parse_duration(&value);
    let _ = config::parse_optional_duration(&value);
    let _ = config::parse_cache_ttl(&value);
    let _ = config::parse_flag(&value);
    let _ = config::parse_optional_addr(&value);
    if let Ok(Some(rule)) = config::parse_try_files(&value) {
        let again: TryFilesRule = rule
            .to_string()
            .parse()
            .expect("a rule prints as it parses");
        assert_eq!(again.to_string(), rule.to_string());
    }
    let (_, root) = fixture_root();
    let _ = root.front_controller(&value);
}
