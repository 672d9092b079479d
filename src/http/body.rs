//! The request body, read completely before a PHP worker is taken.
//!
//! A slow client must never pin a PHP thread, so the body is collected on the async side first:
//! in memory up to a threshold, then spilled to an anonymous temporary file. The total is bounded.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use bytes::{Buf, Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;

use super::BoxError;

/// Bounds on request bodies.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Larger bodies are refused with 413 Payload Too Large.
    pub max_size: u64,
    /// Bodies past this many bytes are kept in a temporary file instead of memory.
    pub spill_threshold: usize,
}

impl Default for BodyLimits {
    fn default() -> Self {
        BodyLimits {
            max_size: 64 * 1024 * 1024,
            spill_threshold: 1024 * 1024,
        }
    }
}

/// Why a body could not be collected.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The body is larger than [`BodyLimits::max_size`].
    TooLarge,
    /// The client sent a broken body or went away.
    Read(BoxError),
    /// The temporary file could not be written.
    Spill(io::Error),
}

/// A fully received request body, read sequentially by PHP (`read_post`).
#[derive(Debug)]
pub(crate) enum RequestBody {
    Memory { data: Bytes, position: usize },
    File { file: File, len: u64 },
}

impl RequestBody {
    pub(crate) fn empty() -> Self {
        RequestBody::Memory {
            data: Bytes::new(),
            position: 0,
        }
    }

    pub(crate) fn len(&self) -> u64 {
        match self {
            RequestBody::Memory { data, .. } => data.len() as u64,
            RequestBody::File { len, .. } => *len,
        }
    }

    /// Fills `buf` from the body; 0 means the end (or an unreadable spill file).
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> usize {
        match self {
            RequestBody::Memory { data, position } => {
                let rest = &data[*position..];
                let n = rest.len().min(buf.len());
                buf[..n].copy_from_slice(&rest[..n]);
                *position += n;
                n
            }
            RequestBody::File { file, .. } => read_full(file, buf),
        }
    }
}

/// Like `read`, but only returns less than `buf.len()` at the end of the file: PHP takes a short
/// read as the end of the body.
fn read_full(file: &mut File, buf: &mut [u8]) -> usize {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!(error = %e, "reading spilled request body failed");
                break;
            }
        }
    }
    filled
}

/// Collects `body` within `limits`. `declared_len` (Content-Length) lets an oversized body be
/// refused before any of it is read.
pub(crate) async fn collect_body<B>(
    body: B,
    declared_len: Option<u64>,
    limits: BodyLimits,
) -> Result<RequestBody, BodyError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    if declared_len.is_some_and(|len| len > limits.max_size) {
        return Err(BodyError::TooLarge);
    }
    let mut body = std::pin::pin!(body);
    let mut memory = BytesMut::new();
    let mut spill: Option<(tokio::fs::File, u64)> = None;

    loop {
        // A `let` (not `while let`) so the frame's error type is not held across later awaits.
        let frame = match body.frame().await {
            None => break,
            Some(frame) => frame.map_err(|e| BodyError::Read(e.into()))?,
        };
        let Ok(mut data) = frame.into_data() else {
            continue; // trailers carry nothing PHP can see
        };
        let data = data.copy_to_bytes(data.remaining());
        let received =
            memory.len() as u64 + spill.as_ref().map_or(0, |(_, n)| *n) + data.len() as u64;
        if received > limits.max_size {
            return Err(BodyError::TooLarge);
        }
        match spill.as_mut() {
            Some((file, written)) => {
                file.write_all(&data).await.map_err(BodyError::Spill)?;
                *written += data.len() as u64;
            }
            None if memory.len() + data.len() > limits.spill_threshold => {
                let mut file =
                    tokio::fs::File::from_std(tempfile::tempfile().map_err(BodyError::Spill)?);
                file.write_all(&memory).await.map_err(BodyError::Spill)?;
                file.write_all(&data).await.map_err(BodyError::Spill)?;
                spill = Some((file, memory.len() as u64 + data.len() as u64));
                memory = BytesMut::new();
            }
            None => memory.extend_from_slice(&data),
        }
    }

    match spill {
        None => Ok(RequestBody::Memory {
            data: memory.freeze(),
            position: 0,
        }),
        Some((mut file, len)) => {
            file.flush().await.map_err(BodyError::Spill)?;
            let mut file = file.into_std().await;
            file.seek(SeekFrom::Start(0)).map_err(BodyError::Spill)?;
            Ok(RequestBody::File { file, len })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use http_body::Frame;
    use http_body_util::Full;

    /// A body delivered in several frames, as a chunked upload arrives.
    struct Chunked(VecDeque<&'static [u8]>);

    impl Body for Chunked {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(
                self.0
                    .pop_front()
                    .map(|c| Ok(Frame::data(Bytes::from_static(c)))),
            )
        }
    }

    fn read_all(mut body: RequestBody) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            let n = body.read(&mut buf);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    fn limits(max_size: u64, spill_threshold: usize) -> BodyLimits {
        BodyLimits {
            max_size,
            spill_threshold,
        }
    }

    #[tokio::test]
    async fn small_bodies_stay_in_memory() {
        let body = Full::new(Bytes::from_static(b"hello"));
        let body = collect_body(body, Some(5), limits(100, 10)).await.unwrap();
        assert!(matches!(body, RequestBody::Memory { .. }));
        assert_eq!(read_all(body), b"hello");
    }

    #[tokio::test]
    async fn large_bodies_spill_to_a_file_and_read_back_whole() {
        let body = Chunked(VecDeque::from([&b"0123456"[..], b"789abcdef", b"ghij"]));
        let body = collect_body(body, None, limits(100, 10)).await.unwrap();
        assert!(matches!(body, RequestBody::File { len: 20, .. }));
        assert_eq!(read_all(body), b"0123456789abcdefghij");
    }

    #[tokio::test]
    async fn declared_oversize_is_refused_before_reading() {
        let body = Full::new(Bytes::from_static(b"x"));
        let err = collect_body(body, Some(5), limits(4, 10))
            .await
            .unwrap_err();
        assert!(matches!(err, BodyError::TooLarge));
    }

    #[tokio::test]
    async fn streamed_oversize_is_refused() {
        let body = Chunked(VecDeque::from([&b"12345"[..], b"6789"]));
        let err = collect_body(body, None, limits(8, 4)).await.unwrap_err();
        assert!(matches!(err, BodyError::TooLarge));
    }
}
