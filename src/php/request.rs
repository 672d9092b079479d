//! Turns an HTTP request into what PHP's SAPI needs: `SG(request_info)` fields and `$_SERVER`.

use std::ffi::{c_void, CString};
use std::time::{SystemTime, UNIX_EPOCH};

use http::request::Parts;
use http::{header, HeaderMap, Version};

use super::ffi;
use crate::http::{
    filename_bytes, protocol_name, ConnInfo, PhpIni, RequestBody, RequestId, Script, ServerVars,
};

/// Server-wide values that appear in every request's `$_SERVER`.
#[derive(Debug, Clone)]
pub(crate) struct ServerIdentity {
    pub(crate) software: String,
    pub(crate) document_root: String,
}

/// Everything one PHP request needs, owned, ready to hand to a worker thread.
#[derive(Debug)]
pub(crate) struct PhpRequest {
    method: CString,
    request_uri: CString,
    query_string: CString,
    script_filename: CString,
    content_type: Option<CString>,
    content_length: i64,
    cookie: Option<CString>,
    authorization: Option<CString>,
    proto_num: i32,
    request_time: f64,
    request_id: CString,
    server_vars: VarBuffer,
    ini: Option<CString>,
    pub(crate) body: RequestBody,
}

/// A request that cannot be given to PHP (a NUL byte where PHP needs a C string).
#[derive(Debug)]
pub(crate) struct InvalidRequest;

impl PhpRequest {
    pub(crate) fn new(
        parts: &Parts,
        script: &Script,
        body: RequestBody,
        conn: &ConnInfo,
        identity: &ServerIdentity,
    ) -> Result<Self, InvalidRequest> {
        let body_len = body.len();
        let has_body = body_len > 0 || parts.headers.contains_key(header::CONTENT_LENGTH);
        let content_length = if has_body {
            body_len.to_string()
        } else {
            String::new()
        };
        let content_type = header_str(&parts.headers, header::CONTENT_TYPE);
        // A rewrite (`try_files … /index.php?$args`) decides the query string PHP parses; the
        // client's stays in REQUEST_URI.
        let query = script
            .query_string
            .as_deref()
            .unwrap_or_else(|| parts.uri.query().unwrap_or(""));
        let request_uri = parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string();
        let cookie = joined_cookies(&parts.headers);
        let request_time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());

        let mut vars = VarBuffer::with_capacity(parts.headers.len());
        add_cgi_vars(
            &mut vars,
            parts,
            script,
            conn,
            identity,
            &request_uri,
            query,
        );
        vars.add("CONTENT_TYPE", content_type.unwrap_or(""));
        vars.add("CONTENT_LENGTH", &content_length);
        add_header_vars(&mut vars, &parts.headers, cookie.as_deref());
        if let Some(extra) = parts.extensions.get::<ServerVars>() {
            for (name, value) in extra.iter() {
                vars.add(name, value);
            }
        }

        let mut ini_text = String::new();
        if accepts_event_stream(&parts.headers) {
            ini_text.push_str(EVENT_STREAM_INI);
        }
        if let Some(entries) = parts.extensions.get::<PhpIni>() {
            ini_text.push_str(&entries.to_ini_text()); // after ours: a layer's settings win
        }
        let ini = (!ini_text.is_empty())
            .then(|| c_string(ini_text))
            .transpose()?;

        Ok(PhpRequest {
            method: c_string(parts.method.as_str())?,
            request_uri: c_string(request_uri.as_str())?,
            query_string: c_string(query)?,
            script_filename: c_string(filename_bytes(&script.filename))?,
            content_type: content_type.map(c_string).transpose()?,
            content_length: body_len as i64,
            cookie: cookie.map(c_string).transpose()?,
            authorization: header_str(&parts.headers, header::AUTHORIZATION)
                .map(c_string)
                .transpose()?,
            proto_num: proto_num(parts.version),
            request_time,
            request_id: c_string(
                parts
                    .extensions
                    .get::<RequestId>()
                    .map_or("", |id| id.as_str()),
            )?,
            server_vars: vars,
            ini,
            body,
        })
    }

    /// A worker script's own request (worker mode): the script as the primary script, no
    /// client, no body; `$_SERVER` has what a `GET /` would have, from an unknown address.
    pub(crate) fn for_worker_script(
        script: &Script,
        identity: &ServerIdentity,
    ) -> Result<Self, InvalidRequest> {
        let (parts, ()) = http::Request::new(()).into_parts();
        let nobody = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
        PhpRequest::new(
            &parts,
            script,
            RequestBody::empty(),
            &ConnInfo::tcp(nobody, nobody),
            identity,
        )
    }

    /// The C view of this request. `entries` must outlive the returned struct's use and is
    /// filled here; `request_seq` identifies it to `tp_interrupt`; `ctx` is handed back to the
    /// host callbacks.
    pub(crate) fn as_ffi(
        &mut self,
        entries: &mut Vec<ffi::tp_server_var>,
        request_seq: u64,
        ctx: *mut c_void,
    ) -> ffi::tp_request {
        self.server_vars.fill_entries(entries);
        ffi::tp_request {
            method: self.method.as_ptr().cast_mut(),
            request_uri: self.request_uri.as_ptr().cast_mut(),
            query_string: self.query_string.as_ptr().cast_mut(),
            script_filename: self.script_filename.as_ptr().cast_mut(),
            content_type: optional_ptr(&self.content_type),
            content_length: self.content_length,
            cookie: optional_ptr(&self.cookie),
            authorization: optional_ptr(&self.authorization),
            proto_num: self.proto_num,
            request_time: self.request_time,
            request_seq,
            request_id: self.request_id.as_ptr().cast_mut(),
            ini: optional_ptr(&self.ini),
            server_vars: entries.as_ptr(),
            server_vars_len: entries.len(),
            ctx,
        }
    }
}

/// php.ini for a request that asked for Server-Sent Events (`Accept: text/event-stream`): the
/// response is an event stream unless the script says otherwise, and every `echo` reaches the
/// client at once, without `flush()` — no output buffer, PHP's implicit flush on.
const EVENT_STREAM_INI: &str =
    "default_mimetype=\"text/event-stream\"\noutput_buffering=0\nimplicit_flush=1\n";

/// Whether `Accept` lists `text/event-stream` (with a non-zero q-value), as `EventSource` sends.
fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|range| {
            let mut params = range.split(';').map(str::trim);
            let media_type = params.next().unwrap_or_default();
            let refused = params.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media_type.eq_ignore_ascii_case("text/event-stream") && !refused
        })
}

fn optional_ptr(s: &Option<CString>) -> *mut std::ffi::c_char {
    s.as_ref()
        .map_or(std::ptr::null_mut(), |s| s.as_ptr().cast_mut())
}

fn c_string(s: impl Into<Vec<u8>>) -> Result<CString, InvalidRequest> {
    CString::new(s).map_err(|_| InvalidRequest)
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// HTTP/2 may split cookies over several fields; PHP expects one `; `-joined string. Bytes, not
/// text: cookie values may carry non-ASCII bytes, which PHP passes on as they are.
fn joined_cookies(headers: &HeaderMap) -> Option<Vec<u8>> {
    let mut values = headers.get_all(header::COOKIE).iter();
    let mut joined = values.next()?.as_bytes().to_vec();
    for value in values {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(value.as_bytes());
    }
    Some(joined)
}

fn proto_num(version: Version) -> i32 {
    match version {
        Version::HTTP_09 => 900,
        Version::HTTP_10 => 1000,
        Version::HTTP_2 => 2000,
        Version::HTTP_3 => 3000,
        _ => 1001,
    }
}

/// The CGI/1.1 variables nginx's `fastcgi_params` gives php-fpm.
fn add_cgi_vars(
    vars: &mut VarBuffer,
    parts: &Parts,
    script: &Script,
    conn: &ConnInfo,
    identity: &ServerIdentity,
    request_uri: &str,
    query: &str,
) {
    let host = request_host(parts);
    let server_name = host
        .as_deref()
        .map(strip_port)
        .unwrap_or_default()
        .to_string();
    let server_name = if server_name.is_empty() {
        conn.local_addr.ip().to_string()
    } else {
        server_name
    };
    let script_filename = String::from_utf8_lossy(filename_bytes(&script.filename));
    let document_uri = format!("{}{}", script.script_name, script.path_info);

    vars.add("GATEWAY_INTERFACE", "CGI/1.1");
    vars.add("SERVER_SOFTWARE", &identity.software);
    vars.add("SERVER_PROTOCOL", protocol_name(parts.version));
    vars.add("SERVER_NAME", &server_name);
    vars.add_display("SERVER_ADDR", conn.local_addr.ip());
    // The client's side, after a trusted proxy's forwarding headers (layer::forwarded).
    vars.add_display("SERVER_PORT", conn.server_port());
    vars.add_display("REMOTE_ADDR", conn.client_ip());
    if let Some(port) = conn.client_port() {
        vars.add_display("REMOTE_PORT", port);
    }
    vars.add("REQUEST_SCHEME", conn.scheme());
    if conn.is_https() {
        vars.add("HTTPS", "on");
    }
    if let Some(tls) = &conn.tls {
        vars.add("SSL_PROTOCOL", tls.protocol);
        vars.add("SSL_CIPHER", tls.cipher);
    }
    vars.add("DOCUMENT_ROOT", &identity.document_root);
    vars.add("REQUEST_METHOD", parts.method.as_str());
    vars.add("REQUEST_URI", request_uri);
    vars.add("QUERY_STRING", query);
    vars.add("DOCUMENT_URI", &document_uri);
    vars.add("SCRIPT_NAME", &script.script_name);
    vars.add("SCRIPT_FILENAME", &script_filename);
    vars.add("PHP_SELF", &document_uri);
    // Always present (empty without one), as nginx's usual `fastcgi_param PATH_INFO` gives it.
    vars.add("PATH_INFO", &script.path_info);
    vars.add("REDIRECT_STATUS", "200");
    vars.add("TOKIO_SERVER_BUILD_VERSION", crate::http::BUILD);
    if let Some(host) = host {
        if !parts.headers.contains_key(header::HOST) {
            // HTTP/2 carries the host in :authority, which never appears as a header.
            vars.add("HTTP_HOST", &host);
        }
    }
}

fn request_host(parts: &Parts) -> Option<String> {
    header_str(&parts.headers, header::HOST)
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.as_str().to_string()))
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// Every request header as `HTTP_*`. Names containing `_` are dropped (as nginx does), so a
/// client cannot forge e.g. `HTTP_X_FORWARDED_FOR` through `X_Forwarded_For`.
fn add_header_vars(vars: &mut VarBuffer, headers: &HeaderMap, cookie: Option<&[u8]>) {
    let mut key = String::with_capacity(64);
    for name in headers.keys() {
        let name = name.as_str();
        if name.contains('_') {
            continue;
        }
        key.clear();
        key.push_str("HTTP_");
        key.extend(name.chars().map(|c| match c {
            '-' => '_',
            c => c.to_ascii_uppercase(),
        }));
        if name == "cookie" {
            vars.add_bytes(&key, cookie.unwrap_or(b""));
            continue;
        }
        let mut values = headers.get_all(name).iter();
        let Some(first) = values.next() else { continue };
        let mut value = first.as_bytes().to_vec();
        for more in values {
            value.extend_from_slice(b", ");
            value.extend_from_slice(more.as_bytes());
        }
        vars.add_bytes(&key, &value);
    }
}

/// `$_SERVER` entries in one buffer: `key\0value\0` pairs, so building them costs two
/// allocations rather than two per variable.
#[derive(Debug, Default)]
struct VarBuffer {
    buffer: Vec<u8>,
    /// (key offset, key length, value offset, value length) into `buffer`.
    spans: Vec<(usize, usize, usize, usize)>,
}

impl VarBuffer {
    /// Room for the CGI variables and `header_count` headers without growing: a request's
    /// `$_SERVER` is about 1 KB and 30 entries plus its headers.
    fn with_capacity(header_count: usize) -> Self {
        VarBuffer {
            buffer: Vec::with_capacity(1024 + 64 * header_count),
            spans: Vec::with_capacity(32 + header_count),
        }
    }

    fn add(&mut self, key: &str, value: &str) {
        self.add_bytes(key, value.as_bytes());
    }

    /// A value formatted straight into the buffer (addresses, ports), without a `String` each.
    fn add_display(&mut self, key: &str, value: impl std::fmt::Display) {
        use std::io::Write;
        // Writing into a Vec cannot fail.
        self.add_with(key, |buffer| {
            let _ = write!(buffer, "{value}");
        });
    }

    fn add_bytes(&mut self, key: &str, value: &[u8]) {
        self.add_with(key, |buffer| buffer.extend_from_slice(value));
    }

    /// Appends `key\0`, then whatever `write_value` appends, then `\0`, and records both.
    fn add_with(&mut self, key: &str, write_value: impl FnOnce(&mut Vec<u8>)) {
        let key_at = self.buffer.len();
        self.buffer.extend_from_slice(key.as_bytes());
        self.buffer.push(0);
        let value_at = self.buffer.len();
        write_value(&mut self.buffer);
        let value_len = self.buffer.len() - value_at;
        self.buffer.push(0);
        self.spans.push((key_at, key.len(), value_at, value_len));
    }

    fn fill_entries(&self, entries: &mut Vec<ffi::tp_server_var>) {
        let base = self.buffer.as_ptr().cast::<std::ffi::c_char>();
        entries.clear();
        entries.extend(self.spans.iter().map(|&(k, kl, v, vl)| ffi::tp_server_var {
            key: ffi::tp_str {
                ptr: base.wrapping_add(k),
                len: kl,
            },
            value: ffi::tp_str {
                ptr: base.wrapping_add(v),
                len: vl,
            },
        }));
    }

    #[cfg(test)]
    fn get(&self, key: &str) -> Option<&[u8]> {
        self.spans
            .iter()
            .find(|&&(k, kl, _, _)| &self.buffer[k..k + kl] == key.as_bytes())
            .map(|&(_, _, v, vl)| &self.buffer[v..v + vl])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn build(request: http::Request<()>) -> PhpRequest {
        let (parts, ()) = request.into_parts();
        let script = Script {
            script_name: "/app.php".into(),
            filename: PathBuf::from("/srv/www/app.php"),
            path_info: "/x/y".into(),
            query_string: None,
        };
        let conn = ConnInfo::tcp(
            "127.0.0.1:8080".parse().unwrap(),
            "10.0.0.7:51000".parse().unwrap(),
        );
        let identity = ServerIdentity {
            software: "tokio_php/test".into(),
            document_root: "/srv/www".into(),
        };
        PhpRequest::new(&parts, &script, RequestBody::empty(), &conn, &identity).unwrap()
    }

    fn var<'a>(request: &'a PhpRequest, key: &str) -> Option<&'a str> {
        request
            .server_vars
            .get(key)
            .map(|v| std::str::from_utf8(v).unwrap())
    }

    #[test]
    fn cgi_variables_are_complete() {
        let request = build(
            http::Request::get("/app.php/x/y?a=1&b=2")
                .header("host", "example.test:8080")
                .body(())
                .unwrap(),
        );
        assert_eq!(var(&request, "REQUEST_URI"), Some("/app.php/x/y?a=1&b=2"));
        assert_eq!(var(&request, "QUERY_STRING"), Some("a=1&b=2"));
        assert_eq!(var(&request, "SCRIPT_NAME"), Some("/app.php"));
        assert_eq!(var(&request, "SCRIPT_FILENAME"), Some("/srv/www/app.php"));
        assert_eq!(var(&request, "PATH_INFO"), Some("/x/y"));
        assert_eq!(var(&request, "PHP_SELF"), Some("/app.php/x/y"));
        assert_eq!(var(&request, "SERVER_NAME"), Some("example.test"));
        assert_eq!(var(&request, "SERVER_PORT"), Some("8080"));
        assert_eq!(var(&request, "REMOTE_ADDR"), Some("10.0.0.7"));
        assert_eq!(var(&request, "REMOTE_PORT"), Some("51000"));
        assert_eq!(var(&request, "SERVER_PROTOCOL"), Some("HTTP/1.1"));
        assert_eq!(var(&request, "HTTP_HOST"), Some("example.test:8080"));
        assert_eq!(var(&request, "CONTENT_LENGTH"), Some(""));
        assert_eq!(var(&request, "HTTPS"), None);
    }

    #[test]
    fn headers_with_underscores_cannot_spoof_http_vars() {
        let request = build(
            http::Request::get("/")
                .header("x-forwarded-for", "1.1.1.1")
                .header("x_real_ip", "6.6.6.6")
                .header("accept", "a")
                .header("accept", "b")
                .body(())
                .unwrap(),
        );
        assert_eq!(var(&request, "HTTP_X_FORWARDED_FOR"), Some("1.1.1.1"));
        assert_eq!(var(&request, "HTTP_X_REAL_IP"), None);
        assert_eq!(var(&request, "HTTP_ACCEPT"), Some("a, b"));
    }

    #[test]
    fn split_cookie_fields_are_joined() {
        let request = build(
            http::Request::get("/")
                .header("cookie", "a=1")
                .header("cookie", "b=2")
                .body(())
                .unwrap(),
        );
        assert_eq!(
            request.cookie.as_ref().unwrap().to_str().unwrap(),
            "a=1; b=2"
        );
        assert_eq!(var(&request, "HTTP_COOKIE"), Some("a=1; b=2"));
    }

    #[test]
    fn http_versions_map_to_protocol_name() {
        let mut request = http::Request::get("/").body(()).unwrap();
        *request.version_mut() = Version::HTTP_2;
        let request = build(request);
        assert_eq!(var(&request, "SERVER_PROTOCOL"), Some("HTTP/2.0"));
        assert_eq!(request.proto_num, 2000);
    }
}
