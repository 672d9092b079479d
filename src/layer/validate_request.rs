//! Refuses requests HTTP forbids a server to act on, before any other layer sees them, and
//! answers the server-wide `OPTIONS *`.
//!
//! - **Host** (RFC 9112 §3.2): an HTTP/1.1 request without `Host`, with more than one, or with a
//!   value that is not `host[:port]` gets `400`; so does an HTTP/1.0 request with an invalid or
//!   repeated one, and an HTTP/2 request whose `Host` names another authority than its
//!   `:authority`. An absolute-form target (`GET http://a.example/ HTTP/1.1`) wins over the
//!   `Host` header (§3.2.2): the header is replaced by the target's authority, so `HTTP_HOST`
//!   and `SERVER_NAME` agree with the URL the client asked for.
//! - **Transfer-Encoding** (RFC 9112 §6.1, §7): a coding other than `chunked` (`gzip, chunked`)
//!   gets `501`; `chunked` more than once gets `400`. Both close the connection, since the body
//!   that follows cannot be framed reliably.
//! - **`*`** as the target: `OPTIONS *` answers `200` with `Allow` and no body; any other method
//!   gets `400`. So does an authority-form target (`CONNECT a.example:443`): this is no proxy.
//!
//! Refusals are short plain-text bodies marked [`ServerGenerated`](crate::http::ServerGenerated).
//!
//! ```
//! use tokio_php::layer::ValidateRequestLayer;
//! use tower::ServiceBuilder;
//!
//! let service = ServiceBuilder::new()
//!     .layer(ValidateRequestLayer::new())
//!     .service_fn(|_: http::Request<()>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::<bytes::Bytes>::from("ok")))
//!     });
//! # drop(service);
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{Either, Full};
use tower::{Layer, Service};

/// The methods `OPTIONS *` announces.
const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// Applies [`ValidateRequest`]. See the [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidateRequestLayer;

impl ValidateRequestLayer {
    /// The layer.
    pub fn new() -> Self {
        ValidateRequestLayer
    }
}

impl<S> Layer<S> for ValidateRequestLayer {
    type Service = ValidateRequest<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ValidateRequest { inner }
    }
}

/// The service produced by [`ValidateRequestLayer`].
#[derive(Debug, Clone)]
pub struct ValidateRequest<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ValidateRequest<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<Either<ResBody, Full<Bytes>>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let answer = match check(&mut request) {
            Verdict::Pass => {
                return ResponseFuture {
                    kind: Kind::Inner {
                        future: self.inner.call(request),
                    },
                }
            }
            Verdict::Options => options_response(),
            Verdict::Refuse(status, reason) => {
                tracing::info!(
                    status = status.as_u16(),
                    reason,
                    "refused a malformed request"
                );
                refusal(status, reason)
            }
        };
        ResponseFuture {
            kind: Kind::Answered {
                response: Some(answer),
            },
        }
    }
}

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Pass,
    /// `OPTIONS *`.
    Options,
    Refuse(StatusCode, &'static str),
}

pub(crate) fn check<B>(request: &mut Request<B>) -> Verdict {
    if let Some(refusal) = transfer_encoding_refusal(request.headers()) {
        return refusal;
    }
    if request.uri() == "*" {
        return if request.method() == Method::OPTIONS {
            Verdict::Options
        } else {
            Verdict::Refuse(StatusCode::BAD_REQUEST, "`*` is a target for OPTIONS only")
        };
    }
    if request.uri().scheme().is_none() && request.uri().authority().is_some() {
        // Authority-form (`CONNECT host:port`, or `GET page.php` read as one): not a proxy.
        return Verdict::Refuse(StatusCode::BAD_REQUEST, "the target is not a path or URL");
    }
    match host_refusal(request) {
        Some(reason) => Verdict::Refuse(StatusCode::BAD_REQUEST, reason),
        None => Verdict::Pass,
    }
}

/// `Transfer-Encoding` codings, over every field line, in order.
fn transfer_codings(headers: &HeaderMap) -> impl Iterator<Item = String> + '_ {
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("\u{0}").split(','))
        .map(|coding| coding.trim().to_ascii_lowercase())
        .filter(|coding| !coding.is_empty())
}

fn transfer_encoding_refusal(headers: &HeaderMap) -> Option<Verdict> {
    let mut chunked = 0;
    for coding in transfer_codings(headers) {
        if coding != "chunked" {
            return Some(Verdict::Refuse(
                StatusCode::NOT_IMPLEMENTED,
                "only the chunked transfer coding is implemented",
            ));
        }
        chunked += 1;
    }
    (chunked > 1).then_some(Verdict::Refuse(
        StatusCode::BAD_REQUEST,
        "chunked applied more than once",
    ))
}

/// Why the request's host is unacceptable, if it is; replaces `Host` by an absolute-form
/// target's authority.
fn host_refusal<B>(request: &mut Request<B>) -> Option<&'static str> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let (first, second) = (hosts.next(), hosts.next());
    if second.is_some() {
        return Some("more than one Host header");
    }
    if first.is_some_and(|host| !is_valid_host(host.as_bytes())) {
        return Some("the Host header is not host[:port]");
    }
    let authority = request.uri().authority().map(|a| a.as_str().to_string());
    match (request.version(), authority) {
        (Version::HTTP_2 | Version::HTTP_3, Some(authority)) => first
            .filter(|host| !host.as_bytes().eq_ignore_ascii_case(authority.as_bytes()))
            .map(|_| "the Host header names another authority than :authority"),
        (Version::HTTP_2 | Version::HTTP_3, None) => None,
        (_, Some(authority)) => {
            // Absolute-form: the target's authority is the host (RFC 9112 §3.2.2).
            if !is_valid_host(authority.as_bytes()) {
                return Some("the target's authority is not host[:port]");
            }
            let value = HeaderValue::from_str(&authority).ok()?;
            request.headers_mut().insert(header::HOST, value);
            None
        }
        (Version::HTTP_11, None) if first.is_none() => Some("HTTP/1.1 requires a Host header"),
        _ => None,
    }
}

/// `uri-host [ ":" port ]` (RFC 3986): a registered name or IPv4 address, or an IP literal in
/// brackets; no user info, path, comma or whitespace.
fn is_valid_host(value: &[u8]) -> bool {
    let (host, port) = match value.strip_prefix(b"[") {
        Some(rest) => match rest.iter().position(|&b| b == b']') {
            Some(end) => {
                let literal = &rest[..end];
                let valid_literal = !literal.is_empty()
                    && literal
                        .iter()
                        .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
                if !valid_literal {
                    return false;
                }
                (None, &rest[end + 1..])
            }
            None => return false,
        },
        None => match value.iter().position(|&b| b == b':') {
            Some(colon) => (Some(&value[..colon]), &value[colon..]),
            None => (Some(value), &value[value.len()..]),
        },
    };
    let valid_name =
        host.is_none_or(|name| !name.is_empty() && name.iter().all(|&b| is_reg_name_byte(b)));
    let valid_port = match port.strip_prefix(b":") {
        Some(digits) => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        None => port.is_empty(),
    };
    valid_name && valid_port
}

/// unreserved / pct-encoded / sub-delims, without the comma (a list is never one host).
fn is_reg_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'%'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b';'
                | b'='
        )
}

fn options_response() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::default());
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    response
}

fn refusal(status: StatusCode, reason: &str) -> Response<Full<Bytes>> {
    let mut response = crate::http::plain_response(status).map(|text| {
        Full::new(Bytes::from(format!(
            "{}{reason}\n",
            String::from_utf8_lossy(&text)
        )))
    });
    // The rest of the connection cannot be trusted to be framed as the client meant.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

pin_project_lite::pin_project! {
    /// The response future of [`ValidateRequest`].
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Inner { #[pin] future: F },
        Answered { response: Option<Response<Full<Bytes>>> },
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<Either<ResBody, Full<Bytes>>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => {
                let response = std::task::ready!(future.poll(cx))?;
                Poll::Ready(Ok(response.map(Either::Left)))
            }
            KindProj::Answered { response } => {
                let response = response.take().expect("polled after completion");
                Poll::Ready(Ok(response.map(Either::Right)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, uri: &str, hosts: &[&str]) -> Request<()> {
        let mut builder = Request::builder().version(version).uri(uri);
        for host in hosts {
            builder = builder.header(header::HOST, *host);
        }
        builder.body(()).unwrap()
    }

    fn verdict(mut request: Request<()>) -> Verdict {
        check(&mut request)
    }

    fn refused(verdict: Verdict) -> bool {
        matches!(verdict, Verdict::Refuse(StatusCode::BAD_REQUEST, _))
    }

    #[test]
    fn http11_needs_exactly_one_valid_host() {
        let v11 = Version::HTTP_11;
        for good in [
            "example.test",
            "example.test:8080",
            "127.0.0.1",
            "[::1]:80",
            "[::1]",
            "xn--bcher-kva.example",
        ] {
            assert_eq!(verdict(request(v11, "/", &[good])), Verdict::Pass, "{good}");
        }
        assert!(refused(verdict(request(v11, "/", &[]))), "missing");
        assert!(
            refused(verdict(request(v11, "/", &["a.test", "b.test"]))),
            "repeated"
        );
        for bad in [
            "a.com, b.com",
            "",
            "a b",
            "user@host",
            "host/path",
            "host:port",
            "[::1",
            "[zz]",
            "host:123456",
            ":80",
        ] {
            assert!(refused(verdict(request(v11, "/", &[bad]))), "{bad:?}");
        }
    }

    #[test]
    fn http10_may_omit_host_but_not_repeat_or_garble_it() {
        let v10 = Version::HTTP_10;
        assert_eq!(verdict(request(v10, "/", &[])), Verdict::Pass);
        assert!(refused(verdict(request(v10, "/", &["a", "b"]))));
        assert!(refused(verdict(request(v10, "/", &["a,b"]))));
    }

    #[test]
    fn an_absolute_target_replaces_the_host_header() {
        let mut absolute = request(
            Version::HTTP_11,
            "http://target.test:81/x",
            &["header.test"],
        );
        assert_eq!(check(&mut absolute), Verdict::Pass);
        assert_eq!(absolute.headers()[header::HOST], "target.test:81");
        let mut without = request(Version::HTTP_11, "http://target.test/x", &[]);
        assert_eq!(check(&mut without), Verdict::Pass);
        assert_eq!(without.headers()[header::HOST], "target.test");
    }

    #[test]
    fn http2_host_must_agree_with_authority() {
        let v2 = Version::HTTP_2;
        assert_eq!(verdict(request(v2, "https://a.test/", &[])), Verdict::Pass);
        assert_eq!(
            verdict(request(v2, "https://a.test/", &["A.test"])),
            Verdict::Pass
        );
        assert!(refused(verdict(request(
            v2,
            "https://a.test/",
            &["b.test"]
        ))));
    }

    #[test]
    fn transfer_codings_other_than_one_chunked_are_refused() {
        let with_te = |values: &[&str]| {
            let mut request = request(Version::HTTP_11, "/", &["a.test"]);
            for value in values {
                request.headers_mut().append(
                    header::TRANSFER_ENCODING,
                    HeaderValue::from_str(value).unwrap(),
                );
            }
            verdict(request)
        };
        assert_eq!(with_te(&["chunked"]), Verdict::Pass);
        assert_eq!(with_te(&["Chunked"]), Verdict::Pass);
        assert!(matches!(
            with_te(&["gzip, chunked"]),
            Verdict::Refuse(StatusCode::NOT_IMPLEMENTED, _)
        ));
        assert!(matches!(
            with_te(&["gzip", "chunked"]),
            Verdict::Refuse(StatusCode::NOT_IMPLEMENTED, _)
        ));
        assert!(refused(with_te(&["chunked, chunked"])));
        assert!(refused(with_te(&["chunked", "chunked"])));
    }

    #[test]
    fn the_asterisk_target_is_for_options_only() {
        let mut options = request(Version::HTTP_11, "*", &["a.test"]);
        *options.method_mut() = Method::OPTIONS;
        assert_eq!(verdict(options), Verdict::Options);
        assert!(refused(verdict(request(
            Version::HTTP_11,
            "*",
            &["a.test"]
        ))));
        let response = options_response();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::ALLOW], ALLOWED_METHODS);
    }
}
