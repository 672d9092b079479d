//! The response side of one PHP request: what the worker thread produces and the body hyper polls.
//!
//! Output is coalesced on the worker into chunks; the status and headers leave with the first
//! chunk (or `flush()`). A script that finishes before its first chunk is sent gets one complete
//! response with an exact length; anything longer streams. A streamed response that cannot be
//! completed ends with an [`IncompleteResponse`] error rather than an ordinary end.

use std::fmt;
use std::future::Future;
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

use super::ffi;
use crate::http::{
    spool, Deadline, FlushedEarly, IncompleteResponse, PhpTimings, RequestBody, SpoolLimits,
    SpoolReader, SpoolWriter,
};

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
        rest: SpoolReader,
        /// Set once the body is known to break off.
        broken: Option<BreakOff>,
    },
}

/// How long a breaking body waits before failing, so the connection can write what preceded the
/// break: hyper discards output it has not written yet when a body fails, and HTTP/2 drops a
/// reset stream's queued frames (the response head included). The connection task runs within
/// microseconds unless the server is overloaded; the wait costs nothing but the failure's delay.
const BREAK_OFF_GRACE: Duration = Duration::from_millis(20);

/// A streamed body that will not be completed: its error, yielded after [`BREAK_OFF_GRACE`].
struct BreakOff {
    reason: IncompleteResponse,
    grace: Pin<Box<tokio::time::Sleep>>,
}

impl BreakOff {
    fn new(reason: IncompleteResponse) -> BreakOff {
        BreakOff {
            reason,
            grace: Box::pin(tokio::time::sleep(BREAK_OFF_GRACE)),
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<IncompleteResponse> {
        self.grace.as_mut().poll(cx).map(|()| self.reason)
    }
}

impl fmt::Debug for BreakOff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BreakOff").field(&self.reason).finish()
    }
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

    fn streaming(first: Bytes, rest: SpoolReader) -> Self {
        PhpBody {
            kind: Kind::Streaming {
                first: (!first.is_empty()).then_some(first),
                rest,
                broken: None,
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
    type Error = IncompleteResponse;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, IncompleteResponse>>> {
        match &mut self.kind {
            Kind::Complete(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Kind::Streaming {
                first,
                rest,
                broken,
            } => {
                if let Some(data) = first.take() {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                if let Some(broken) = broken {
                    return broken.poll(cx).map(|reason| Some(Err(reason)));
                }
                match std::task::ready!(rest.poll_recv(cx)) {
                    Some(Err(reason)) => broken
                        .insert(BreakOff::new(reason))
                        .poll(cx)
                        .map(|reason| Some(Err(reason))),
                    chunk => Poll::Ready(chunk.map(|result| result.map(Frame::data))),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Complete(data) => data.is_none(),
            Kind::Streaming {
                first,
                rest,
                broken,
            } => first.is_none() && broken.is_none() && rest.is_finished(),
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
#[derive(Debug, Clone)]
pub(crate) struct OutputSettings {
    /// Output is sent once this much is buffered (or on flush / the end of the script).
    pub(crate) chunk_size: usize,
    /// Where output waits for a slow client (memory, then a temp file), and for how long.
    pub(crate) spool: SpoolLimits,
}

/// One request's state on the worker thread: the body PHP reads and the output it writes.
#[derive(Debug)]
pub(crate) struct Exchange {
    body: RequestBody,
    reply: Option<oneshot::Sender<ResponseStart>>,
    head: Option<Head>,
    buffer: BytesMut,
    stream: Option<SpoolWriter>,
    client_gone: bool,
    settings: OutputSettings,
    /// Where a streamed response's spool may start its watchdog.
    runtime: Option<tokio::runtime::Handle>,
    deadline: Option<Deadline>,
    flushed: bool,
    /// Set when a fatal error is ending the script.
    failure: Option<ScriptFailure>,
    clock: Clock,
    timings: PhpTimings,
    counters: Option<Arc<ScriptCounters>>,
}

/// How a script ended early (a `tp_failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScriptFailure {
    FatalError,
    /// `max_execution_time`, or the request's deadline interrupting it.
    TimedOut,
    /// `exit()` in a worker script's request handler, which ends the whole worker script.
    Exited,
}

impl ScriptFailure {
    fn from_ffi(failure: i32) -> Option<ScriptFailure> {
        match failure {
            f if f == ffi::tp_failure::TP_FAILURE_FATAL_ERROR as i32 => {
                Some(ScriptFailure::FatalError)
            }
            f if f == ffi::tp_failure::TP_FAILURE_TIMED_OUT as i32 => Some(ScriptFailure::TimedOut),
            f if f == ffi::tp_failure::TP_FAILURE_EXIT as i32 => Some(ScriptFailure::Exited),
            _ => None,
        }
    }
}

/// What a pool counts about the scripts it ran (reported in its `PoolStats`).
#[derive(Debug, Default)]
pub(crate) struct ScriptCounters {
    /// PHP fatal errors (the script ended on one), counted by type.
    pub(crate) fatal_errors: AtomicU64,
    /// Scripts stopped by a timeout the timeout layer did not answer `504`: `REQUEST_TIMEOUT`
    /// after the response head was sent, or `max_execution_time` at any point.
    pub(crate) timeouts: AtomicU64,
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
            runtime: None,
            deadline: None,
            flushed: false,
            failure: None,
            clock: Clock::new(),
            timings: PhpTimings::default(),
            counters: None,
        }
    }

    /// The tokio runtime the request came from (the worker thread is not in one).
    pub(crate) fn with_runtime(mut self, runtime: Option<tokio::runtime::Handle>) -> Self {
        self.runtime = runtime;
        self
    }

    /// Counts this request's fatal errors and timeouts into `counters`.
    pub(crate) fn with_counters(mut self, counters: Arc<ScriptCounters>) -> Self {
        self.counters = Some(counters);
        self
    }

    /// PHP is ending the script early (a `tp_failure`): the first failure decides how the
    /// response ends, and a fatal error or timeout counts as the request's fatal error (whatever
    /// log_errors says).
    pub(crate) fn script_failed(&mut self, failure: i32) {
        let Some(failure) = ScriptFailure::from_ffi(failure) else {
            return;
        };
        if self.failure.is_none() {
            if let (Some(counters), false) = (&self.counters, failure == ScriptFailure::Exited) {
                counters.fatal_errors.fetch_add(1, Ordering::Relaxed);
            }
            self.failure = Some(failure);
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

    /// The script ended: completes the response (unless `finish_early` already did); when the
    /// script died, answers `500` if nothing has left yet, or breaks the streaming response off.
    pub(crate) fn finish(mut self) {
        self.clock.finished = Some(Instant::now());
        let failure = self.failure_reason();
        self.count_timeout(failure);
        match failure {
            Some(reason) if self.stream.is_some() => self.break_off(reason),
            Some(_) if self.reply.is_some() => self.answer_internal_error(),
            _ => {
                if !self.client_gone && (self.reply.is_some() || self.stream.is_some()) {
                    self.send(true);
                }
            }
        }
    }

    /// Why the script did not end normally, as a response under way would report it.
    fn failure_reason(&self) -> Option<IncompleteResponse> {
        Some(match self.failure? {
            ScriptFailure::FatalError | ScriptFailure::Exited => IncompleteResponse::ScriptFailed,
            // The deadline's interrupt and max_execution_time end a script the same way.
            ScriptFailure::TimedOut if self.deadline.as_ref().is_some_and(Deadline::is_expired) => {
                IncompleteResponse::RequestTimeout
            }
            ScriptFailure::TimedOut => IncompleteResponse::ExecutionTimeLimit,
        })
    }

    fn count_timeout(&self, failure: Option<IncompleteResponse>) {
        let head_sent = self.reply.is_none();
        let counted = match failure {
            Some(IncompleteResponse::ExecutionTimeLimit) => true,
            // Before the head, the timeout layer answered (and counted) a 504.
            Some(IncompleteResponse::RequestTimeout) => head_sent,
            _ => false,
        };
        if let (true, Some(counters)) = (counted, &self.counters) {
            counters.timeouts.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The script died before any of its response left. PHP turns a `200` into a `500` when a
    /// script dies before its headers are sent; with output buffering off they count as sent at
    /// the first `echo`, so a script that printed a little and then died kept its `200`, and the
    /// partial page would pass for a complete one. Nothing has left the server yet, so the same
    /// rule applies here: the output goes out as it is (as with php-fpm and PHP's production
    /// `output_buffering`), under `500` instead of `200`.
    fn answer_internal_error(&mut self) {
        match &mut self.head {
            Some(head) if head.status == StatusCode::OK => {
                head.status = StatusCode::INTERNAL_SERVER_ERROR;
            }
            Some(_) => {}
            None => self.head = Some(Head::internal_error()),
        }
        if !self.client_gone {
            self.send(true);
        }
    }

    /// Sends the output PHP produced before it stopped, then ends the stream as incomplete.
    fn break_off(&mut self, reason: IncompleteResponse) {
        if !self.client_gone {
            self.send(false);
            tracing::warn!(%reason, "response broken off after its head was sent");
        }
        if let Some(stream) = self.stream.take() {
            stream.fail(reason);
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
            let (writer, reader) = spool(self.settings.spool.clone(), self.runtime.take());
            self.stream = Some(writer);
            PhpBody::streaming(data, reader)
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
        match stream.send(data) {
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
            spool: SpoolLimits {
                memory: 1 << 20,
                disk: Arc::new(crate::http::DiskBudget::new(0)),
                write_timeout: Duration::from_secs(5),
            },
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
