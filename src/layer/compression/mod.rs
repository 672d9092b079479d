//! Compression of text-like responses: zstd, brotli or gzip, whichever the client accepts (zstd
//! first when it accepts several equally), at a level chosen by the body's size.
//!
//! A response is compressed when its Content-Type is one of [`COMPRESSIBLE_TYPES`] (never
//! images or woff/woff2 fonts, which are compressed already), it has no Content-Encoding or
//! Content-Range yet, and its size is known to be between [`MIN_SIZE`] and [`MAX_SIZE`] (or it
//! streams). The level depends on the size ([`Level::for_size`]): for each size class, the
//! fastest that still compresses a PHP-built page at least as well as nginx's
//! `gzip_comp_level 5` (docs/benchmarks.md has the measurements).
//!
//! A stream (size unknown: PHP output longer than one chunk) is compressed chunk by chunk, each
//! chunk flushed through the encoder so the client receives it when PHP produced it. Streams that
//! asked to be delivered promptly go out uncompressed: Server-Sent Events (not a compressible
//! type), `X-Accel-Buffering: no`, and PHP output that started with `flush()` ([`FlushedEarly`]).
//!
//! Compressible responses carry `Vary: Accept-Encoding`; a compressed one loses its
//! Content-Length and Accept-Ranges, and a strong ETag becomes weak (the bytes differ from the
//! identity representation's). `Accept-Encoding` q-values are honoured (`br;q=0` means no);
//! when the client refuses every encoding we have *and* `identity` (`identity;q=0`, or `*;q=0`
//! without `identity`), a compressible response is answered `406 Not Acceptable`, as RFC 9110
//! §12.5.3 allows.
//!
//! ```
//! use tokio_php::layer::CompressionLayer;
//! use tower::ServiceBuilder;
//!
//! let service = ServiceBuilder::new()
//!     .layer(CompressionLayer::new())
//!     .service_fn(|_: http::Request<()>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::<bytes::Bytes>::from("hi")))
//!     });
//! # drop(service);
//! ```
//!
//! [`FlushedEarly`]: crate::http::FlushedEarly

mod accept;
mod encoder;

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tower::{BoxError, Layer, Service};

pub use accept::AcceptEncoding;
use encoder::Encoder;
pub use encoder::{Encoding, Level, MEDIUM_BODY, SMALL_BODY};

use crate::http::{plain_response, FlushedEarly};

/// Content types (without parameters) that are compressed.
pub const COMPRESSIBLE_TYPES: &[&str] = &[
    "text/html",
    "text/css",
    "text/plain",
    "text/xml",
    "text/javascript",
    "application/javascript",
    "application/json",
    "application/xml",
    "application/xhtml+xml",
    "application/rss+xml",
    "application/atom+xml",
    "application/manifest+json",
    "application/ld+json",
    "image/svg+xml",
    "font/ttf",
    "font/otf",
    "application/vnd.ms-fontobject",
];

/// Smallest body worth compressing.
pub const MIN_SIZE: u64 = 256;
/// Largest body compressed (bigger ones cost more CPU than they save on a fast network).
pub const MAX_SIZE: u64 = 3 * 1024 * 1024;

/// Applies [`Compression`] to a service. See the [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct CompressionLayer {
    _private: (),
}

impl CompressionLayer {
    /// zstd, brotli and gzip with tokio_php's rules.
    pub fn new() -> Self {
        CompressionLayer { _private: () }
    }
}

impl<S> Layer<S> for CompressionLayer {
    type Service = Compression<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Compression { inner }
    }
}

/// Compresses the responses of `S`. See the [module docs](self).
#[derive(Debug, Clone, Copy)]
pub struct Compression<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Compression<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
{
    type Response = Response<CompressionBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let accepted = AcceptEncoding::from_headers(request.headers());
        ResponseFuture {
            inner: self.inner.call(request),
            accepted,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Compression`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        accepted: AcceptEncoding,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<CompressionBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        Poll::Ready(Ok(compress(response, this.accepted)))
    }
}

/// What to do with one response.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// Not ours to compress (type, size, status, already encoded, prompt stream).
    Leave,
    /// Compressible, but the client accepts none of our encodings.
    Identity,
    /// Compressible, and the client refuses both our encodings and `identity`.
    NotAcceptable,
    /// Compress with this encoding; `size` is the body's exact size when known.
    Encode {
        encoding: Encoding,
        size: Option<u64>,
    },
}

fn decide<B: Body>(response: &Response<B>, accepted: &AcceptEncoding) -> Decision {
    let headers = response.headers();
    if !is_compressible_type(headers) {
        return Decision::Leave;
    }
    let status = response.status();
    if status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status.is_informational()
        || headers.contains_key(header::CONTENT_ENCODING)
        || headers.contains_key(header::CONTENT_RANGE)
    {
        return Decision::Leave;
    }
    let size = response.body().size_hint().exact().or_else(|| {
        headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    });
    let worth_it = match size {
        Some(size) => (MIN_SIZE..=MAX_SIZE).contains(&size),
        None => !wants_prompt_delivery(response),
    };
    if !worth_it {
        return Decision::Leave;
    }
    match accepted.preferred() {
        Some(encoding) => Decision::Encode { encoding, size },
        None if accepted.refuses_identity() => Decision::NotAcceptable,
        None => Decision::Identity,
    }
}

fn compress<B: Body>(
    response: Response<B>,
    accepted: &AcceptEncoding,
) -> Response<CompressionBody<B>> {
    let decision = decide(&response, accepted);
    let (mut parts, body) = response.into_parts();
    if decision != Decision::Leave {
        add_vary_accept_encoding(&mut parts.headers);
    }
    let kind = match decision {
        Decision::Leave | Decision::Identity => Kind::Identity { inner: body },
        Decision::NotAcceptable => {
            let rejection = plain_response(StatusCode::NOT_ACCEPTABLE);
            let (rejected, text) = rejection.into_parts();
            parts.status = rejected.status;
            parts.headers.remove(header::CONTENT_LENGTH);
            parts.headers.remove(header::ETAG);
            parts.headers.remove(header::LAST_MODIFIED);
            parts.headers.extend(rejected.headers);
            parts.extensions.extend(rejected.extensions);
            Kind::Rejected { text: Some(text) }
        }
        Decision::Encode { encoding, size } => match Encoder::new(encoding, size) {
            Ok(encoder) => {
                mark_encoded(&mut parts.headers, encoding);
                Kind::Encoded {
                    inner: body,
                    encoder: Some(encoder),
                    flush_each_frame: size.is_none(),
                    trailers: None,
                }
            }
            // An encoder that cannot start (allocation) costs the client nothing: send as is.
            Err(_) => Kind::Identity { inner: body },
        },
    };
    Response::from_parts(parts, CompressionBody { kind })
}

fn is_compressible_type(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .is_some_and(|t| COMPRESSIBLE_TYPES.iter().any(|c| c.eq_ignore_ascii_case(t)))
}

fn wants_prompt_delivery<B>(response: &Response<B>) -> bool {
    response.extensions().get::<FlushedEarly>().is_some()
        || response
            .headers()
            .get("x-accel-buffering")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"no"))
}

fn add_vary_accept_encoding(headers: &mut HeaderMap) {
    let already = headers.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim() == "*" || t.trim().eq_ignore_ascii_case("accept-encoding"))
        })
    });
    if !already {
        headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
}

fn mark_encoded(headers: &mut HeaderMap, encoding: Encoding) {
    headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(encoding.token()),
    );
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::ACCEPT_RANGES);
    if let Some(etag) = headers.get(header::ETAG) {
        if !etag.as_bytes().starts_with(b"W/") {
            let mut weak = b"W/".to_vec();
            weak.extend_from_slice(etag.as_bytes());
            if let Ok(weak) = HeaderValue::from_bytes(&weak) {
                headers.insert(header::ETAG, weak);
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The response body of [`Compression`]: the inner body as is, compressed, or the text of a
    /// `406`.
    pub struct CompressionBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project_lite::pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Identity { #[pin] inner: B },
        Encoded {
            #[pin]
            inner: B,
            // `None` once finished.
            encoder: Option<Encoder>,
            flush_each_frame: bool,
            // The inner body's trailers, sent after the last compressed bytes.
            trailers: Option<HeaderMap>,
        },
        Rejected { text: Option<Bytes> },
    }
}

impl<B> std::fmt::Debug for CompressionBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Identity { .. } => "Identity",
            Kind::Encoded { .. } => "Encoded",
            Kind::Rejected { .. } => "Rejected",
        };
        f.debug_struct("CompressionBody")
            .field("kind", &kind)
            .finish()
    }
}

impl<B> Body for CompressionBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Identity { inner } => inner.poll_frame(cx).map_err(Into::into),
            KindProj::Rejected { text } => Poll::Ready(text.take().map(|t| Ok(Frame::data(t)))),
            KindProj::Encoded {
                mut inner,
                encoder,
                flush_each_frame,
                trailers,
            } => loop {
                let Some(active) = encoder.as_mut() else {
                    return Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))));
                };
                let produced = match ready!(inner.as_mut().poll_frame(cx)) {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => active.compress(&data, *flush_each_frame)?,
                        Err(frame) => {
                            *trailers = frame.into_trailers().ok();
                            continue;
                        }
                    },
                    Some(Err(error)) => return Poll::Ready(Some(Err(error.into()))),
                    None => encoder.take().expect("checked above").finish()?,
                };
                if !produced.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(produced))));
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Identity { inner } => inner.is_end_stream(),
            Kind::Encoded {
                encoder, trailers, ..
            } => encoder.is_none() && trailers.is_none(),
            Kind::Rejected { text } => text.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Identity { inner } => inner.size_hint(),
            Kind::Encoded { .. } => SizeHint::default(),
            Kind::Rejected { text } => {
                SizeHint::with_exact(text.as_ref().map_or(0, |t| t.len() as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::combinators::UnsyncBoxBody;
    use http_body_util::{BodyExt, Full, StreamBody};
    use std::convert::Infallible;
    use std::io::Read;
    use tower::{service_fn, ServiceExt};

    type TestBody = UnsyncBoxBody<Bytes, Infallible>;

    async fn respond(accept: &str, response: Response<TestBody>) -> Response<Bytes> {
        let (parts, frames) = respond_frames(accept, response).await;
        Response::from_parts(parts, frames.concat().into())
    }

    /// The response and its body's data frames, as they left the layer.
    async fn respond_frames(
        accept: &str,
        response: Response<TestBody>,
    ) -> (http::response::Parts, Vec<Vec<u8>>) {
        let response = std::sync::Mutex::new(Some(response));
        let service = CompressionLayer::new().layer(service_fn(move |_: Request<()>| {
            let response = response.lock().unwrap().take().unwrap();
            async move { Ok::<_, Infallible>(response) }
        }));
        let request = Request::builder()
            .header("accept-encoding", accept)
            .body(())
            .unwrap();
        let (parts, mut body) = service.oneshot(request).await.unwrap().into_parts();
        let mut frames = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                frames.push(data.to_vec());
            }
        }
        (parts, frames)
    }

    fn page(len: usize) -> String {
        let mut page = String::with_capacity(len + 32);
        for i in 0.. {
            if page.len() >= len {
                break;
            }
            page.push_str(&format!("<li>item {i}</li>"));
        }
        page.truncate(len);
        page
    }

    fn full(content_type: &str, len: usize) -> Response<TestBody> {
        Response::builder()
            .header("content-type", content_type)
            .header("content-length", len)
            .body(Full::new(Bytes::from(page(len))).boxed_unsync())
            .unwrap()
    }

    fn encoding(response: &Response<Bytes>) -> Option<&str> {
        response
            .headers()
            .get("content-encoding")
            .map(|v| v.to_str().unwrap())
    }

    fn decode(response: &Response<Bytes>) -> String {
        let data = &response.body()[..];
        let mut out = Vec::new();
        match encoding(response) {
            Some("br") => {
                brotli::Decompressor::new(data, 4096)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Some("gzip") => {
                flate2::read::GzDecoder::new(data)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Some("zstd") => out = zstd::stream::decode_all(data).unwrap(),
            None => out = data.to_vec(),
            Some(other) => panic!("unexpected encoding {other}"),
        }
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn each_client_gets_the_best_encoding_it_accepts() {
        for (accept, expected) in [
            ("gzip, deflate, br, zstd", "zstd"),
            ("gzip, deflate, br", "br"),
            ("gzip, deflate", "gzip"),
            ("br;q=0.5, gzip", "gzip"),
        ] {
            let response = respond(accept, full("text/html; charset=UTF-8", 40_000)).await;
            assert_eq!(encoding(&response), Some(expected), "{accept}");
            assert_eq!(response.headers()["vary"], "accept-encoding");
            assert!(response.headers().get("content-length").is_none());
            assert_eq!(decode(&response), page(40_000), "{accept}");
            assert!(response.body().len() < 40_000 / 4, "{accept} compresses");
        }
    }

    #[tokio::test]
    async fn without_an_accepted_encoding_the_body_is_untouched_but_varies() {
        for accept in ["", "deflate", "br;q=0, gzip;q=0, zstd;q=0"] {
            let response = respond(accept, full("text/html", 4096)).await;
            assert_eq!(encoding(&response), None, "{accept}");
            assert_eq!(response.headers()["vary"], "accept-encoding");
            assert_eq!(response.headers()["content-length"], "4096");
            assert_eq!(decode(&response), page(4096));
        }
    }

    #[tokio::test]
    async fn refusing_identity_too_is_not_acceptable() {
        let response = respond("identity;q=0", full("text/html", 4096)).await;
        assert_eq!(response.status(), StatusCode::NOT_ACCEPTABLE);
        assert_eq!(&response.body()[..], b"406 Not Acceptable\n");
        assert!(response.headers().get("content-length").is_none());
        let response = respond("identity;q=0, gzip", full("text/html", 4096)).await;
        assert_eq!(encoding(&response), Some("gzip"));
    }

    #[tokio::test]
    async fn small_large_binary_and_partial_bodies_are_left_alone() {
        assert_eq!(encoding(&respond("br", full("text/html", 255)).await), None);
        assert_eq!(
            encoding(&respond("br", full("text/html", 256)).await),
            Some("br")
        );
        assert_eq!(
            encoding(&respond("br", full("text/plain", 3 * 1024 * 1024 + 1)).await),
            None
        );
        for binary in [
            "image/png",
            "font/woff2",
            "font/woff",
            "application/octet-stream",
        ] {
            let response = respond("br", full(binary, 4096)).await;
            assert_eq!(encoding(&response), None, "{binary}");
            assert!(response.headers().get("vary").is_none(), "{binary}");
        }
        for text in COMPRESSIBLE_TYPES {
            assert_eq!(
                encoding(&respond("br", full(text, 1000)).await),
                Some("br"),
                "{text}"
            );
        }
        let mut partial = full("text/html", 4096);
        *partial.status_mut() = StatusCode::PARTIAL_CONTENT;
        partial
            .headers_mut()
            .insert("content-range", "bytes 0-4095/10000".parse().unwrap());
        assert_eq!(encoding(&respond("br", partial).await), None);
    }

    #[tokio::test]
    async fn already_encoded_responses_are_not_compressed_twice() {
        let mut response = full("text/html", 4096);
        response
            .headers_mut()
            .insert("content-encoding", "gzip".parse().unwrap());
        let response = respond("br", response).await;
        assert_eq!(encoding(&response), Some("gzip"));
        assert_eq!(response.body().len(), 4096);
    }

    #[tokio::test]
    async fn a_compressed_representation_has_a_weak_etag_and_no_ranges() {
        let mut response = full("text/css", 4096);
        let headers = response.headers_mut();
        headers.insert("etag", "\"abc\"".parse().unwrap());
        headers.insert("accept-ranges", "bytes".parse().unwrap());
        let response = respond("gzip", response).await;
        assert_eq!(response.headers()["etag"], "W/\"abc\"");
        assert!(response.headers().get("accept-ranges").is_none());
    }

    fn streamed(content_type: &str, chunks: usize) -> Response<TestBody> {
        let frames = Chunks(
            (0..chunks)
                .map(|i| Bytes::from(format!("data: {i} {}\n\n", page(2000))))
                .collect::<Vec<_>>()
                .into_iter(),
        );
        Response::builder()
            .header("content-type", content_type)
            .body(StreamBody::new(frames).boxed_unsync())
            .unwrap()
    }

    struct Chunks(std::vec::IntoIter<Bytes>);

    impl futures_core::Stream for Chunks {
        type Item = Result<http_body::Frame<Bytes>, Infallible>;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Poll::Ready(self.0.next().map(|c| Ok(http_body::Frame::data(c))))
        }
    }

    #[tokio::test]
    async fn streams_are_compressed_chunk_by_chunk() {
        let (parts, frames) = respond_frames("gzip, br, zstd", streamed("text/html", 5)).await;
        assert_eq!(parts.headers["content-encoding"], "zstd");
        // One compressed frame per chunk, plus the end of the stream.
        assert!(frames.len() >= 5, "{} frames", frames.len());
        let mut decoded = Vec::new();
        for (i, frame) in frames.iter().enumerate() {
            decoded.extend_from_slice(frame);
            // Everything sent so far decodes to the chunks sent so far.
            let mut out = Vec::new();
            let mut decoder = zstd::stream::read::Decoder::new(&decoded[..]).unwrap();
            let _ = decoder.read_to_end(&mut out);
            if i < 5 {
                let text = String::from_utf8(out).unwrap();
                assert!(text.ends_with("\n\n"), "chunk {i} arrived whole");
                assert_eq!(text.matches("data: ").count(), i + 1);
            }
        }
    }

    /// A streamed response whose chunks the test hands over one at a time.
    fn fed(
        content_type: &str,
    ) -> (
        Response<TestBody>,
        tokio::sync::mpsc::UnboundedSender<Bytes>,
    ) {
        let (feed, chunks) = tokio::sync::mpsc::unbounded_channel();
        let response = Response::builder()
            .header("content-type", content_type)
            .body(StreamBody::new(Fed(chunks)).boxed_unsync())
            .unwrap();
        (response, feed)
    }

    struct Fed(tokio::sync::mpsc::UnboundedReceiver<Bytes>);

    impl futures_core::Stream for Fed {
        type Item = Result<http_body::Frame<Bytes>, Infallible>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.0
                .poll_recv(cx)
                .map(|chunk| chunk.map(|c| Ok(http_body::Frame::data(c))))
        }
    }

    /// Puts `response` through the layer, feeds it one chunk and returns the response head with
    /// what left the layer before any second chunk existed. Run on a paused clock: the minute
    /// allowed costs no time, and a layer that held the chunk back fails.
    async fn first_frame(
        accept: &str,
        response: Response<TestBody>,
        feed: tokio::sync::mpsc::UnboundedSender<Bytes>,
        chunk: Bytes,
    ) -> (http::response::Parts, Bytes) {
        let response = std::sync::Mutex::new(Some(response));
        let service = CompressionLayer::new().layer(service_fn(move |_: Request<()>| {
            let response = response.lock().unwrap().take().unwrap();
            async move { Ok::<_, Infallible>(response) }
        }));
        let request = Request::builder()
            .header("accept-encoding", accept)
            .body(())
            .unwrap();
        let (parts, mut body) = service.oneshot(request).await.unwrap().into_parts();
        feed.send(chunk).unwrap();
        let first = tokio::time::timeout(std::time::Duration::from_secs(60), body.frame())
            .await
            .expect("the chunk leaves the layer before the next one exists")
            .expect("a frame")
            .unwrap()
            .into_data()
            .unwrap();
        (parts, first)
    }

    #[tokio::test(start_paused = true)]
    async fn prompt_streams_pass_each_chunk_on_as_written_even_of_a_compressible_type() {
        let chunk = Bytes::from(format!("{}\n", page(2000)));
        // text/html is compressible: only the request for prompt delivery keeps it out of an
        // encoder, so each assertion below fails if that request is ignored.
        let (mut unbuffered, feed) = fed("text/html");
        unbuffered
            .headers_mut()
            .insert("x-accel-buffering", "no".parse().unwrap());
        let (parts, first) = first_frame("br", unbuffered, feed, chunk.clone()).await;
        assert!(parts.headers.get("content-encoding").is_none());
        assert_eq!(
            first, chunk,
            "X-Accel-Buffering: no passes the chunk on as is"
        );

        let (mut flushed, feed) = fed("text/html");
        flushed.extensions_mut().insert(FlushedEarly);
        let (parts, first) = first_frame("br", flushed, feed, chunk.clone()).await;
        assert!(parts.headers.get("content-encoding").is_none());
        assert_eq!(first, chunk, "output PHP flushed early passes on as is");

        // The control: the same stream, not marked, is compressed — and still not held back.
        let (plain, feed) = fed("text/html");
        let (parts, first) = first_frame("br", plain, feed, chunk.clone()).await;
        assert_eq!(parts.headers["content-encoding"], "br", "plain long output");
        let mut decoded = Vec::new();
        let _ = brotli::Decompressor::new(&first[..], 4096).read_to_end(&mut decoded);
        assert_eq!(decoded, chunk, "the compressed chunk is flushed whole");
    }

    #[tokio::test(start_paused = true)]
    async fn server_sent_events_are_not_a_compressible_type_and_pass_on_as_written() {
        assert!(!COMPRESSIBLE_TYPES.contains(&"text/event-stream"));
        let chunk = Bytes::from_static(b"data: 1\n\n");
        let (events, feed) = fed("text/event-stream");
        let (parts, first) = first_frame("br", events, feed, chunk.clone()).await;
        assert!(parts.headers.get("content-encoding").is_none());
        assert!(
            parts.headers.get("vary").is_none(),
            "not compressible at all"
        );
        assert_eq!(first, chunk);
    }
}
