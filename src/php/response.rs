//! The response side of one PHP request: what the worker thread produces and the body hyper polls.
//!
//! Output is coalesced on the worker into chunks; the status and headers leave with the first
//! chunk (or `flush()`). A script that finishes before its first chunk is sent gets one complete
//! response with an exact length; anything longer streams.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;

use super::body::RequestBody;
use super::channel::{chunk_channel, ChunkReceiver, ChunkSender};
use super::ffi;
use crate::layer::Deadline;

/// The body of a response produced by [`PhpService`](crate::php::PhpService).
#[derive(Debug)]
pub struct PhpBody {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Complete(Option<Bytes>),
    Streaming {
        first: Option<Bytes>,
        rest: ChunkReceiver,
    },
}

impl PhpBody {
    /// A body of exactly these bytes.
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        PhpBody {
            kind: Kind::Complete((!data.is_empty()).then_some(data)),
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        PhpBody {
            kind: Kind::Complete(None),
        }
    }

    fn streaming(first: Bytes, rest: ChunkReceiver) -> Self {
        PhpBody {
            kind: Kind::Streaming {
                first: (!first.is_empty()).then_some(first),
                rest,
            },
        }
    }
}

impl Default for PhpBody {
    fn default() -> Self {
        PhpBody::empty()
    }
}

impl Body for PhpBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut self.kind {
            Kind::Complete(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Kind::Streaming { first, rest } => {
                if let Some(data) = first.take() {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                rest.poll_recv(cx)
                    .map(|chunk| chunk.map(|d| Ok(Frame::data(d))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Complete(data) => data.is_none(),
            Kind::Streaming { first, rest } => first.is_none() && rest.is_finished(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Complete(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Streaming { .. } => SizeHint::default(),
        }
    }
}

/// Where a PHP request's time went, attached to its response's extensions (read by
/// [`ProfileLayer`](crate::layer::ProfileLayer)). For a streamed response the values are those
/// known when its headers left: `script` and `output` so far, and no `shutdown`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhpTimings {
    /// Resolving the script, reading the request body and preparing PHP's request.
    pub parse: Duration,
    /// Waiting in the queue for a worker.
    pub queue: Duration,
    /// `php_request_startup()`.
    pub startup: Duration,
    /// Running the script (output time included).
    pub script: Duration,
    /// Handing output to the client (inside `script` and `shutdown`).
    pub output: Duration,
    /// `php_request_shutdown()`: shutdown functions, destructors, cleanup.
    pub shutdown: Option<Duration>,
}

/// The moments of one request on its worker.
#[derive(Debug, Clone, Copy)]
struct Clock {
    began: Instant,
    script_started: Option<Instant>,
    script_done: Option<Instant>,
    finished: Option<Instant>,
    output: Duration,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            began: Instant::now(),
            script_started: None,
            script_done: None,
            finished: None,
            output: Duration::ZERO,
        }
    }

    fn timings(&self, mut timings: PhpTimings) -> PhpTimings {
        let now = Instant::now();
        let script_started = self.script_started.unwrap_or(now);
        timings.startup = script_started - self.began;
        timings.script = self
            .script_done
            .unwrap_or(now)
            .saturating_duration_since(script_started);
        timings.output = self.output;
        timings.shutdown = self
            .finished
            .zip(self.script_done)
            .map(|(finished, done)| finished - done);
        timings
    }
}

/// Marks a streamed response whose output started with PHP's `flush()`: the script wants its
/// bytes delivered promptly (progress output, Server-Sent Events), so nothing should buffer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushedEarly;

/// Status and headers as PHP sent them.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
}

impl Head {
    /// Builds the head from PHP's status and `Name: value` lines. Lines that are not valid HTTP
    /// are dropped (and logged) rather than failing the response.
    pub(crate) fn from_php(status: i32, lines: &[&[u8]]) -> Head {
        let status = u16::try_from(status)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or_else(|| {
                tracing::warn!(status, "PHP set an invalid status code; answering 500");
                StatusCode::INTERNAL_SERVER_ERROR
            });
        let mut headers = HeaderMap::with_capacity(lines.len());
        for line in lines {
            match parse_header_line(line) {
                Some((name, _)) if is_connection_specific(&name) => {}
                Some((name, value)) => {
                    headers.append(name, value);
                }
                None => tracing::warn!(
                    line = %String::from_utf8_lossy(line),
                    "dropping a header PHP sent that is not valid HTTP"
                ),
            }
        }
        Head { status, headers }
    }

    pub(crate) fn internal_error() -> Head {
        Head {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            headers: HeaderMap::new(),
        }
    }
}

fn parse_header_line(line: &[u8]) -> Option<(HeaderName, HeaderValue)> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = HeaderName::from_bytes(line[..colon].trim_ascii()).ok()?;
    let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).ok()?;
    Some((name, value))
}

/// Hop-by-hop headers belong to our connection, not the script (and are illegal in HTTP/2).
fn is_connection_specific(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// What the worker hands to the waiting service future: the head and the body to stream.
#[derive(Debug)]
pub(crate) struct ResponseStart {
    pub(crate) head: Head,
    pub(crate) body: PhpBody,
    pub(crate) complete: bool,
    pub(crate) flushed_early: bool,
    pub(crate) timings: PhpTimings,
}

impl ResponseStart {
    pub(crate) fn into_response(self, is_head_request: bool) -> Response<PhpBody> {
        let ResponseStart {
            head,
            body,
            complete,
            flushed_early,
            timings,
        } = self;
        let mut headers = head.headers;
        if complete && !is_head_request {
            // The exact length is known; PHP's own Content-Length could disagree with it.
            headers.remove(header::CONTENT_LENGTH);
        }
        let mut response = Response::new(body);
        *response.status_mut() = head.status;
        *response.headers_mut() = headers;
        if flushed_early {
            response.extensions_mut().insert(FlushedEarly);
        }
        response.extensions_mut().insert(timings);
        response
    }
}

/// Output tuning for one request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutputSettings {
    /// Output is sent once this much is buffered (or on flush / the end of the script).
    pub(crate) chunk_size: usize,
    /// At most this much output waits for a slow client before PHP blocks.
    pub(crate) buffer_limit: usize,
    /// A client that reads nothing for this long is treated as gone.
    pub(crate) write_timeout: Duration,
}

/// One request's state on the worker thread: the body PHP reads and the output it writes.
#[derive(Debug)]
pub(crate) struct Exchange {
    body: RequestBody,
    reply: Option<oneshot::Sender<ResponseStart>>,
    head: Option<Head>,
    buffer: BytesMut,
    stream: Option<ChunkSender>,
    client_gone: bool,
    settings: OutputSettings,
    deadline: Option<Deadline>,
    flushed: bool,
    clock: Clock,
    timings: PhpTimings,
    fatal_errors: Option<Arc<AtomicU64>>,
}

impl Exchange {
    pub(crate) fn new(
        body: RequestBody,
        reply: oneshot::Sender<ResponseStart>,
        settings: OutputSettings,
    ) -> Self {
        Exchange {
            body,
            reply: Some(reply),
            head: None,
            buffer: BytesMut::new(),
            stream: None,
            client_gone: false,
            settings,
            deadline: None,
            flushed: false,
            clock: Clock::new(),
            timings: PhpTimings::default(),
            fatal_errors: None,
        }
    }

    /// Counts this request's PHP fatal errors into `counter`.
    pub(crate) fn with_error_counter(mut self, counter: Arc<AtomicU64>) -> Self {
        self.fatal_errors = Some(counter);
        self
    }

    /// PHP logged `message` at syslog `level`.
    pub(crate) fn logged(&mut self, level: i32, message: &str) {
        // E_ERROR, E_CORE_ERROR, E_COMPILE_ERROR and E_USER_ERROR all log "... Fatal error: ...".
        if level <= 3 && message.contains("Fatal error") {
            if let Some(counter) = &self.fatal_errors {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Timings measured before the worker took the request.
    pub(crate) fn with_timings(mut self, parse: Duration, queue: Duration) -> Self {
        self.timings.parse = parse;
        self.timings.queue = queue;
        self
    }

    /// PHP reached `phase` (a `tp_phase`).
    pub(crate) fn phase(&mut self, phase: i32) {
        let now = Some(Instant::now());
        match phase {
            p if p == ffi::tp_phase::TP_PHASE_STARTED as i32 => self.clock.script_started = now,
            p if p == ffi::tp_phase::TP_PHASE_SCRIPT_DONE as i32 => self.clock.script_done = now,
            _ => {}
        }
    }

    /// The deadline `tokio_request_heartbeat()` moves.
    pub(crate) fn with_deadline(mut self, deadline: Option<Deadline>) -> Self {
        self.deadline = deadline;
        self
    }

    /// `tokio_request_heartbeat($seconds)`: false when the request has no timeout.
    pub(crate) fn heartbeat(&mut self, seconds: i64) -> bool {
        self.deadline.as_ref().is_some_and(|d| d.extend(seconds))
    }

    pub(crate) fn read_body(&mut self, buf: &mut [u8]) -> usize {
        self.body.read(buf)
    }

    pub(crate) fn set_head(&mut self, head: Head) {
        self.head = Some(head);
    }

    /// Buffers output; returns false once the client is gone.
    pub(crate) fn write(&mut self, data: &[u8]) -> bool {
        if self.client_gone {
            return false;
        }
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= self.settings.chunk_size {
            return self.send(false);
        }
        true
    }

    /// `flush()`: sends the head (if not yet) and whatever is buffered.
    pub(crate) fn flush(&mut self) -> bool {
        self.flushed = true;
        !self.client_gone && self.send(false)
    }

    /// `tokio_finish_request()`: completes the response now with what was written; PHP discards
    /// later output itself.
    pub(crate) fn finish_early(&mut self) {
        if !self.client_gone && (self.reply.is_some() || self.stream.is_some()) {
            self.send(true);
        }
    }

    /// The script ended: completes the response (unless `finish_early` already did).
    pub(crate) fn finish(mut self) {
        self.clock.finished = Some(Instant::now());
        if !self.client_gone && (self.reply.is_some() || self.stream.is_some()) {
            self.send(true);
        }
    }

    /// PHP was stopped mid-instruction (a C stack overflow): what it left for the response is not
    /// trustworthy. Unless part of the response already left, the reply is dropped unanswered,
    /// so the service answers its own `500`; a response already streaming just ends here.
    pub(crate) fn abandon(mut self) {
        self.reply = None;
        self.stream = None;
    }

    fn send(&mut self, last: bool) -> bool {
        let started = Instant::now();
        let data = self.buffer.split().freeze();
        let delivered = match self.reply.take() {
            Some(reply) => self.start_response(reply, data, last),
            None => self.send_chunk(data),
        };
        self.clock.output += started.elapsed();
        if last {
            self.stream = None; // ends the streamed body
        }
        if !delivered {
            self.client_gone = true;
        }
        delivered
    }

    fn start_response(
        &mut self,
        reply: oneshot::Sender<ResponseStart>,
        data: Bytes,
        last: bool,
    ) -> bool {
        let head = self.head.take().unwrap_or_else(Head::internal_error);
        let body = if last {
            PhpBody::full(data)
        } else {
            let (sender, receiver) = chunk_channel(self.settings.buffer_limit);
            self.stream = Some(sender);
            PhpBody::streaming(data, receiver)
        };
        reply
            .send(ResponseStart {
                head,
                body,
                complete: last,
                flushed_early: self.flushed && !last,
                timings: self.clock.timings(self.timings),
            })
            .is_ok()
    }

    fn send_chunk(&mut self, data: Bytes) -> bool {
        let Some(stream) = &self.stream else {
            return true;
        };
        if data.is_empty() {
            return !stream.is_closed();
        }
        match stream.send(data, self.settings.write_timeout) {
            Ok(()) => true,
            Err(error) => {
                tracing::debug!(?error, "client stopped receiving the response");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn settings(chunk_size: usize) -> OutputSettings {
        OutputSettings {
            chunk_size,
            buffer_limit: 1 << 20,
            write_timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn header_lines_are_parsed_and_hop_by_hop_ones_dropped() {
        let head = Head::from_php(
            201,
            &[
                b"Content-type: text/plain",
                b"Set-Cookie: a=1",
                b"Set-Cookie: b=2",
                b"Connection: close",
                b"Bad Header Name: x",
            ],
        );
        assert_eq!(head.status, StatusCode::CREATED);
        assert_eq!(head.headers["content-type"], "text/plain");
        assert_eq!(head.headers.get_all("set-cookie").iter().count(), 2);
        assert!(head.headers.get("connection").is_none());
        assert_eq!(head.headers.len(), 3);
    }

    #[test]
    fn an_invalid_status_becomes_500() {
        assert_eq!(
            Head::from_php(42, &[]).status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[tokio::test]
    async fn short_output_is_one_complete_response() {
        let (tx, rx) = oneshot::channel();
        let mut exchange = Exchange::new(RequestBody::empty(), tx, settings(1024));
        exchange.set_head(Head::from_php(200, &[b"Content-Length: 999"]));
        assert!(exchange.write(b"hello "));
        assert!(exchange.write(b"world"));
        exchange.finish();
        let start = rx.await.unwrap();
        assert!(start.complete);
        let response = start.into_response(false);
        assert!(response.headers().get("content-length").is_none());
        assert_eq!(response.body().size_hint().exact(), Some(11));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"hello world");
    }

    #[tokio::test]
    async fn long_output_streams_in_chunks() {
        let (tx, rx) = oneshot::channel();
        let worker = std::thread::spawn(move || {
            let mut exchange = Exchange::new(RequestBody::empty(), tx, settings(4));
            exchange.set_head(Head::from_php(200, &[]));
            for _ in 0..10 {
                assert!(exchange.write(b"abc"));
            }
            exchange.finish();
        });
        let start = rx.await.unwrap();
        assert!(!start.complete);
        let body = start
            .into_response(false)
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes();
        worker.join().unwrap();
        assert_eq!(body.len(), 30);
    }

    #[tokio::test]
    async fn an_abandoned_exchange_leaves_the_reply_unanswered() {
        let (tx, rx) = oneshot::channel();
        let mut exchange = Exchange::new(RequestBody::empty(), tx, settings(1024));
        exchange.set_head(Head::from_php(200, &[]));
        assert!(exchange.write(b"half a page"));
        exchange.abandon();
        assert!(rx.await.is_err(), "the service answers its own 500");
    }

    #[tokio::test]
    async fn an_abandoned_exchange_ends_a_body_already_streaming() {
        let (tx, rx) = oneshot::channel();
        let worker = std::thread::spawn(move || {
            let mut exchange = Exchange::new(RequestBody::empty(), tx, settings(4));
            exchange.set_head(Head::from_php(200, &[]));
            assert!(exchange.write(b"streamed"));
            exchange.abandon();
        });
        let start = rx.await.unwrap();
        assert!(!start.complete);
        let body = start.body.collect().await.unwrap().to_bytes();
        worker.join().unwrap();
        assert_eq!(&body[..], b"streamed");
    }

    #[tokio::test]
    async fn a_dropped_response_reports_the_client_gone() {
        let (tx, rx) = oneshot::channel();
        drop(rx);
        let mut exchange = Exchange::new(RequestBody::empty(), tx, settings(1));
        exchange.set_head(Head::from_php(200, &[]));
        assert!(!exchange.write(b"x"));
        assert!(!exchange.write(b"y"));
    }
}
