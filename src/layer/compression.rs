//! Brotli compression of text-like responses, through tower-http's compression middleware with
//! tokio_php's rules for what is worth compressing.
//!
//! A response is compressed when the client accepts `br` (q-values honoured: `br;q=0` means no),
//! its Content-Type is one of [`COMPRESSIBLE_TYPES`] (never images or woff/woff2 fonts, which are
//! compressed already), and its size is known to be between 256 bytes and 3 MiB. Streamed
//! responses (size unknown) are compressed only when nothing in them asked to be delivered
//! promptly: Server-Sent Events, `X-Accel-Buffering: no`, and PHP output that started with
//! `flush()` ([`FlushedEarly`]) go out uncompressed, because the brotli encoder would hold them
//! back until its buffer fills. A response that already has a Content-Encoding is left alone.
//! Compressible responses carry `Vary: Accept-Encoding`.
//!
//! tower-http answers `406 Not Acceptable` when the client refuses every encoding including
//! `identity` (`Accept-Encoding: identity;q=0` or `*;q=0`), as RFC 9110 recommends.
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
//! [`FlushedEarly`]: crate::php::FlushedEarly

use http::header;
use http_body::Body;
use tower::Layer;
use tower_http::compression::predicate::Predicate;

use crate::php::FlushedEarly;

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

/// Brotli compression with tokio_php's rules. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct CompressionLayer {
    inner: tower_http::compression::CompressionLayer<Compressible>,
}

impl CompressionLayer {
    /// Brotli only, at tower-http's default quality (4, as nginx), with [`Compressible`].
    pub fn new() -> Self {
        CompressionLayer {
            inner: tower_http::compression::CompressionLayer::new()
                .br(true)
                .no_gzip()
                .no_deflate()
                .no_zstd()
                .compress_when(Compressible),
        }
    }
}

impl Default for CompressionLayer {
    fn default() -> Self {
        CompressionLayer::new()
    }
}

impl<S> Layer<S> for CompressionLayer {
    type Service = tower_http::compression::Compression<S, Compressible>;

    fn layer(&self, inner: S) -> Self::Service {
        self.inner.layer(inner)
    }
}

/// The rules deciding which responses are compressed. See the [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct Compressible;

impl Predicate for Compressible {
    fn should_compress<B>(&self, response: &http::Response<B>) -> bool
    where
        B: Body,
    {
        let headers = response.headers();
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase());
        if !content_type.is_some_and(|t| COMPRESSIBLE_TYPES.contains(&t.as_str())) {
            return false;
        }
        let size = response.body().size_hint().exact().or_else(|| {
            headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
        });
        match size {
            Some(size) => (MIN_SIZE..=MAX_SIZE).contains(&size),
            None => !wants_prompt_delivery(response),
        }
    }
}

fn wants_prompt_delivery<B>(response: &http::Response<B>) -> bool {
    response.extensions().get::<FlushedEarly>().is_some()
        || response
            .headers()
            .get("x-accel-buffering")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"no"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::{BodyExt, Full, StreamBody};
    use std::convert::Infallible;
    use tower::{service_fn, ServiceExt};

    async fn respond(
        accept: &str,
        response: Response<http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>>,
    ) -> Response<Bytes> {
        let response = std::sync::Mutex::new(Some(response));
        let service = CompressionLayer::new().layer(service_fn(move |_: Request<()>| {
            let response = response.lock().unwrap().take().unwrap();
            async move { Ok::<_, Infallible>(response) }
        }));
        let request = Request::builder()
            .header("accept-encoding", accept)
            .body(())
            .unwrap();
        let (parts, body) = service.oneshot(request).await.unwrap().into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Response::from_parts(parts, body)
    }

    fn full(
        content_type: &str,
        len: usize,
    ) -> Response<http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>> {
        Response::builder()
            .header("content-type", content_type)
            .body(Full::new(Bytes::from("a".repeat(len))).boxed_unsync())
            .unwrap()
    }

    fn encoding(response: &Response<Bytes>) -> Option<&str> {
        response
            .headers()
            .get("content-encoding")
            .map(|v| v.to_str().unwrap())
    }

    fn decompress(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        brotli_decompress(data, &mut out);
        out
    }

    fn brotli_decompress(data: &[u8], out: &mut Vec<u8>) {
        use std::io::Read;
        let mut reader = brotli::Decompressor::new(data, 4096);
        reader.read_to_end(out).unwrap();
    }

    #[tokio::test]
    async fn text_in_the_size_window_is_brotli_compressed() {
        let response = respond("gzip, br", full("text/html; charset=UTF-8", 4096)).await;
        assert_eq!(encoding(&response), Some("br"));
        assert_eq!(response.headers()["vary"], "accept-encoding");
        assert_eq!(decompress(response.body()), "a".repeat(4096).into_bytes());
    }

    #[tokio::test]
    async fn q_values_are_honoured() {
        let response = respond("br;q=0, gzip", full("text/html", 4096)).await;
        assert_eq!(encoding(&response), None);
        assert_eq!(
            response.headers()["vary"],
            "accept-encoding",
            "still varies"
        );
        let response = respond("gzip;q=1.0, br;q=0.5", full("text/html", 4096)).await;
        assert_eq!(
            encoding(&response),
            Some("br"),
            "br is the only encoding offered"
        );
    }

    #[tokio::test]
    async fn small_large_and_binary_bodies_are_left_alone() {
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

    fn streamed(
        content_type: &str,
    ) -> Response<http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>> {
        let frames = futures_util_stream(vec![Bytes::from("data: 1\n\n"); 100]);
        Response::builder()
            .header("content-type", content_type)
            .body(StreamBody::new(frames).boxed_unsync())
            .unwrap()
    }

    fn futures_util_stream(
        chunks: Vec<Bytes>,
    ) -> impl futures_core::Stream<Item = Result<http_body::Frame<Bytes>, Infallible>> {
        struct Chunks(std::vec::IntoIter<Bytes>);
        impl futures_core::Stream for Chunks {
            type Item = Result<http_body::Frame<Bytes>, Infallible>;
            fn poll_next(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Self::Item>> {
                std::task::Poll::Ready(self.0.next().map(|c| Ok(http_body::Frame::data(c))))
            }
        }
        Chunks(chunks.into_iter())
    }

    #[tokio::test]
    async fn prompt_streams_are_never_held_back() {
        assert_eq!(
            encoding(&respond("br", streamed("text/event-stream")).await),
            None
        );
        let mut response = streamed("text/plain");
        response
            .headers_mut()
            .insert("x-accel-buffering", "no".parse().unwrap());
        assert_eq!(encoding(&respond("br", response).await), None);
        let mut response = streamed("text/html");
        response.extensions_mut().insert(FlushedEarly);
        assert_eq!(encoding(&respond("br", response).await), None);
        assert_eq!(
            encoding(&respond("br", streamed("text/html")).await),
            Some("br"),
            "plain long output is compressed"
        );
    }
}
