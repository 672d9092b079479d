//! The output a client has not read yet, between a worker thread (PHP's) and the async
//! response body.
//!
//! The worker does not wait for the client: chunks queue in memory up to a limit, then in an
//! anonymous temporary file, so the script runs to its end and the worker is free while the
//! connection drains the spool at the client's pace — as nginx spools a FastCGI response to
//! its buffers and then a temp file. The temp files of all responses together are bounded by a
//! [`DiskBudget`]; when it is used up (or zero), a worker whose client is the memory limit
//! behind waits for the client, up to the write timeout, as it did before spooling.
//!
//! A client that takes nothing for the write timeout while output waits for it is given up: what
//! it has not read is dropped, and the response breaks off with
//! [`IncompleteResponse::ClientStalled`]. While the worker writes, it notices this itself;
//! once the response has spilled to disk or the script has ended, a watchdog task does.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::runtime::Handle;
use tracing::Instrument;

/// Why a streamed response body breaks off instead of ending: its status and headers are sent,
/// but not all of its body will be. The body yields this as its error, so hyper closes an HTTP/1.1
/// connection without the terminating chunk (or short of its Content-Length) and resets an
/// HTTP/2 stream (`RST_STREAM`) — the client sees a failed response, not a complete short one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IncompleteResponse {
    /// The script died after its output started: a fatal error, an uncaught exception,
    /// `memory_limit`.
    #[error("the script failed after its output started")]
    ScriptFailed,
    /// `REQUEST_TIMEOUT` passed after the response head was sent; the script was stopped.
    #[error("REQUEST_TIMEOUT passed after the response head was sent; the script was stopped")]
    RequestTimeout,
    /// PHP's `max_execution_time` stopped the script after its output started.
    #[error("max_execution_time stopped the script after its output started")]
    ExecutionTimeLimit,
    /// The client accepted no output for the write timeout and was given up.
    #[error("the client accepted no output for the write timeout")]
    ClientStalled,
    /// Output spooled to a temporary file could not be read back.
    #[error("output spooled to a temporary file could not be read back")]
    OutputLost,
}

/// Bytes read back from a temp file at a time.
const READ_SIZE: usize = 64 * 1024;

/// Temp-file space shared by every response of a pool.
#[derive(Debug)]
pub(crate) struct DiskBudget {
    limit: u64,
    used: AtomicU64,
    files: AtomicUsize,
}

impl DiskBudget {
    /// At most `limit` bytes in temp files at once (0: never spool to disk).
    pub(crate) fn new(limit: u64) -> DiskBudget {
        DiskBudget {
            limit,
            used: AtomicU64::new(0),
            files: AtomicUsize::new(0),
        }
    }

    fn try_reserve(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn release(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes held in temp files now.
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Temp files open now.
    pub(crate) fn files(&self) -> usize {
        self.files.load(Ordering::Relaxed)
    }
}

/// How much a spool holds before it makes the worker wait, and for how long.
#[derive(Debug, Clone)]
pub(crate) struct SpoolLimits {
    /// Bytes held in memory before output goes to a temp file.
    pub(crate) memory: usize,
    /// The pool's temp-file budget.
    pub(crate) disk: Arc<DiskBudget>,
    /// A client that takes nothing for this long while output waits is given up.
    pub(crate) write_timeout: Duration,
}

/// Why a chunk was not taken.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SendError {
    /// The response body was dropped: the client is gone.
    Closed,
    /// The client took nothing for the whole write timeout and was given up.
    TimedOut,
}

/// The unread tail of a response in an unlinked temp file, from `read_at` to `write_at`.
#[derive(Debug)]
struct SpillFile {
    file: File,
    read_at: u64,
    write_at: u64,
    disk: Arc<DiskBudget>,
}

impl SpillFile {
    fn create(disk: &Arc<DiskBudget>) -> io::Result<SpillFile> {
        let file = tempfile::tempfile()?;
        disk.files.fetch_add(1, Ordering::Relaxed);
        Ok(SpillFile {
            file,
            read_at: 0,
            write_at: 0,
            disk: disk.clone(),
        })
    }

    fn unread(&self) -> u64 {
        self.write_at - self.read_at
    }

    /// Appends `chunk`, whose bytes the caller reserved in the budget.
    fn append(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.file.write_all_at(chunk, self.write_at)?;
        self.write_at += chunk.len() as u64;
        Ok(())
    }

    /// Reads the next unread bytes (at most [`READ_SIZE`]) and gives their space back.
    fn read_next(&mut self) -> io::Result<Bytes> {
        let len = usize::try_from(self.unread()).map_or(READ_SIZE, |n| n.min(READ_SIZE));
        let mut buf = BytesMut::zeroed(len);
        self.file.read_exact_at(&mut buf, self.read_at)?;
        self.read_at += len as u64;
        self.disk.release(len as u64);
        if self.unread() == 0 {
            // Drained: start over at the beginning and free the disk blocks.
            self.read_at = 0;
            self.write_at = 0;
            let _ = self.file.set_len(0);
        }
        Ok(buf.freeze())
    }
}

impl Drop for SpillFile {
    fn drop(&mut self) {
        self.disk.release(self.unread());
        self.disk.files.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct State {
    /// The oldest output; everything in `file` was written after it.
    memory: VecDeque<Bytes>,
    memory_bytes: usize,
    file: Option<SpillFile>,
    writer_done: bool,
    reader_gone: bool,
    /// Set when the response will not be completed: the reader yields it after the output.
    failure: Option<IncompleteResponse>,
    waker: Option<Waker>,
    /// Since when output has waited with the client taking none of it.
    stalled_since: Option<Instant>,
    watched: bool,
    /// A temp file failed once: stay in memory from then on.
    disk_failed: bool,
}

impl State {
    fn has_unread(&self) -> bool {
        self.memory_bytes > 0 || self.file.as_ref().is_some_and(|f| f.unread() > 0)
    }

    fn file_unread(&self) -> u64 {
        self.file.as_ref().map_or(0, SpillFile::unread)
    }

    fn wake_reader(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Drops what the client has not read and ends the response as `reason`.
    fn give_up(&mut self, reason: IncompleteResponse) {
        self.memory.clear();
        self.memory_bytes = 0;
        self.file = None;
        self.stalled_since = None;
        self.failure.get_or_insert(reason);
        self.wake_reader();
    }
}

/// Where a chunk went.
enum Stored {
    Memory,
    Disk,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when the reader takes output or leaves.
    space_freed: Condvar,
    limits: SpoolLimits,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the spool itself is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Memory first; a temp file once memory is full or the file already holds output (order).
    fn store(&self, state: &mut State, chunk: &Bytes) -> Option<Stored> {
        let fits_memory =
            state.memory_bytes == 0 || state.memory_bytes + chunk.len() <= self.limits.memory;
        if state.file_unread() == 0 && fits_memory {
            state.memory_bytes += chunk.len();
            state.memory.push_back(chunk.clone());
            return Some(Stored::Memory);
        }
        if state.disk_failed || !self.limits.disk.try_reserve(chunk.len() as u64) {
            return None;
        }
        match self.append_to_file(state, chunk) {
            Ok(()) => Some(Stored::Disk),
            Err(error) => {
                self.limits.disk.release(chunk.len() as u64);
                state.disk_failed = true;
                tracing::warn!(%error, "could not spool output to a temporary file; waiting for the client instead");
                None
            }
        }
    }

    fn append_to_file(&self, state: &mut State, chunk: &[u8]) -> io::Result<()> {
        let file = match &mut state.file {
            Some(file) => file,
            empty => empty.insert(SpillFile::create(&self.limits.disk)?),
        };
        file.append(chunk)
    }
}

/// The PHP worker's end.
#[derive(Debug)]
pub(crate) struct SpoolWriter {
    shared: Arc<Shared>,
    /// Where the watchdog runs (none outside a tokio runtime: then only the worker's own wait
    /// gives a stalled client up).
    runtime: Option<Handle>,
}

/// The response body's end.
#[derive(Debug)]
pub(crate) struct SpoolReader {
    shared: Arc<Shared>,
}

/// A spool with `limits`; `runtime` runs its watchdog when one is needed.
pub(crate) fn spool(limits: SpoolLimits, runtime: Option<Handle>) -> (SpoolWriter, SpoolReader) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        space_freed: Condvar::new(),
        limits,
    });
    (
        SpoolWriter {
            shared: shared.clone(),
            runtime,
        },
        SpoolReader { shared },
    )
}

impl SpoolWriter {
    /// Queues `chunk`. Blocks the calling (PHP) thread only when memory and the disk budget are
    /// full, until the client takes some output, leaves, or has taken nothing for the write
    /// timeout — then it is given up ([`IncompleteResponse::ClientStalled`]).
    pub(crate) fn send(&self, chunk: Bytes) -> Result<(), SendError> {
        let timeout = self.shared.limits.write_timeout;
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            if state.reader_gone {
                return Err(SendError::Closed);
            }
            if state.failure.is_some() {
                return Err(SendError::TimedOut);
            }
            if let Some(stored) = self.shared.store(&mut state, &chunk) {
                state.stalled_since.get_or_insert_with(Instant::now);
                state.wake_reader();
                if matches!(stored, Stored::Disk) {
                    self.start_watchdog(&mut state);
                }
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                tracing::warn!(
                    ?timeout,
                    "the client took no output for the write timeout; giving it up"
                );
                state.give_up(IncompleteResponse::ClientStalled);
                return Err(SendError::TimedOut);
            }
            state = self
                .shared
                .space_freed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Whether the response body was dropped.
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.lock().reader_gone
    }

    /// Ends the response as incomplete: the reader gets the output, then `reason`.
    pub(crate) fn fail(self, reason: IncompleteResponse) {
        self.shared.lock().failure.get_or_insert(reason);
    }

    /// From now on a task gives the client up if it stalls: the worker may no longer be there
    /// to notice (it finished), or no longer waits for the client (the output went to disk).
    fn start_watchdog(&self, state: &mut State) {
        let Some(runtime) = &self.runtime else {
            return;
        };
        if state.watched {
            return;
        }
        state.watched = true;
        let watch = give_up_when_stalled(self.shared.clone());
        runtime.spawn(watch.instrument(tracing::Span::current()));
    }
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.writer_done = true;
        state.wake_reader();
        if state.has_unread() && !state.reader_gone {
            self.start_watchdog(&mut state); // no worker is left to notice a stall
        }
    }
}

/// Gives the client up once it has taken nothing for the write timeout while output waited;
/// returns when the response is done with.
async fn give_up_when_stalled(shared: Arc<Shared>) {
    let timeout = shared.limits.write_timeout;
    loop {
        let check_at = {
            let state = shared.lock();
            let ended = state.writer_done || state.failure.is_some();
            if state.reader_gone || (ended && !state.has_unread()) {
                return; // nothing is or will be waiting for the client
            }
            state.stalled_since.unwrap_or_else(Instant::now) + timeout
        };
        tokio::time::sleep_until(check_at.into()).await;
        let mut state = shared.lock();
        if state
            .stalled_since
            .is_some_and(|since| since.elapsed() >= timeout)
        {
            tracing::warn!(
                ?timeout,
                "the client took no output for the write timeout; dropping what it has not read"
            );
            state.give_up(IncompleteResponse::ClientStalled);
            shared.space_freed.notify_all();
            return;
        }
    }
}

impl SpoolReader {
    /// The next output; once the writer finished and everything was taken, `None`, or the
    /// reason the response is incomplete.
    pub(crate) fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, IncompleteResponse>>> {
        let mut state = self.shared.lock();
        if let Some(chunk) = state.memory.pop_front() {
            state.memory_bytes -= chunk.len();
            self.took_output(&mut state);
            return Poll::Ready(Some(Ok(chunk)));
        }
        if let Some(file) = state.file.as_mut().filter(|f| f.unread() > 0) {
            let read = file.read_next();
            return Poll::Ready(Some(match read {
                Ok(chunk) => {
                    self.took_output(&mut state);
                    Ok(chunk)
                }
                Err(error) => {
                    tracing::error!(%error, "could not read spooled output back from its temporary file");
                    state.give_up(IncompleteResponse::OutputLost);
                    self.shared.space_freed.notify_all();
                    Err(IncompleteResponse::OutputLost)
                }
            }));
        }
        if let Some(failure) = state.failure {
            return Poll::Ready(Some(Err(failure)));
        }
        if state.writer_done {
            return Poll::Ready(None);
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn took_output(&self, state: &mut State) {
        state.stalled_since = state.has_unread().then(Instant::now);
        self.shared.space_freed.notify_one();
    }

    /// Whether everything was taken and the writer finished the response.
    pub(crate) fn is_finished(&self) -> bool {
        let state = self.shared.lock();
        state.writer_done && !state.has_unread() && state.failure.is_none()
    }
}

impl Drop for SpoolReader {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.reader_gone = true;
        state.memory.clear();
        state.memory_bytes = 0;
        state.file = None;
        self.shared.space_freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    fn limits(memory: usize, disk: u64, write_timeout: Duration) -> SpoolLimits {
        SpoolLimits {
            memory,
            disk: Arc::new(DiskBudget::new(disk)),
            write_timeout,
        }
    }

    /// Waits (at most 5 s) until the watchdog has dropped a stalled client's spooled output.
    async fn watchdog_gives_up(disk: &DiskBudget) {
        let given_up = async {
            while disk.files() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), given_up)
            .await
            .expect("the watchdog drops the stalled client's output");
    }

    async fn recv(reader: &mut SpoolReader) -> Option<Result<Bytes, IncompleteResponse>> {
        poll_fn(|cx| reader.poll_recv(cx)).await
    }

    #[tokio::test]
    async fn output_keeps_its_order_through_memory_and_the_temp_file() {
        let limits = limits(100, 1 << 20, Duration::from_secs(5));
        let disk = limits.disk.clone();
        let (writer, mut reader) = spool(limits, None);
        let chunk = |i: u8| Bytes::from(vec![i; 30 + usize::from(i % 7)]);
        let mut expected = Vec::new();
        let mut received = Vec::new();
        let mut spilled = false;
        // Writes run ahead of reads, so output spills to disk, drains, and returns to memory.
        for i in 0..200u8 {
            writer.send(chunk(i)).unwrap();
            expected.extend_from_slice(&chunk(i));
            spilled |= disk.used() > 0;
            if i % 3 == 0 {
                received.extend_from_slice(&recv(&mut reader).await.unwrap().unwrap());
            }
        }
        assert!(spilled, "output went through a temp file");
        drop(writer);
        while let Some(chunk) = recv(&mut reader).await {
            received.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(received, expected);
        assert!(reader.is_finished());
        assert_eq!(disk.used(), 0, "read output gives its space back");
        drop(reader);
        assert_eq!(disk.files(), 0);
    }

    #[test]
    fn the_worker_never_waits_while_the_budget_lasts() {
        let limits = limits(1024, 1 << 20, Duration::from_millis(10));
        let disk = limits.disk.clone();
        let (writer, reader) = spool(limits, None);
        for _ in 0..64 {
            writer.send(Bytes::from(vec![b'x'; 16 * 1024])).unwrap();
        }
        assert_eq!(
            disk.used(),
            63 * 16 * 1024,
            "all but the first chunk on disk"
        );
        drop(reader);
        assert_eq!(
            (disk.used(), disk.files()),
            (0, 0),
            "a client that leaves frees it all"
        );
    }

    #[tokio::test]
    async fn past_the_budget_the_worker_waits_and_then_gives_the_client_up() {
        let limits = limits(10, 15, Duration::from_millis(20));
        let (writer, mut reader) = spool(limits, None);
        writer.send(Bytes::from_static(b"0123456789")).unwrap(); // memory
        writer.send(Bytes::from_static(b"abcdefghij")).unwrap(); // disk
        let err = writer.send(Bytes::from_static(b"klmnopqrst")).unwrap_err();
        assert_eq!(err, SendError::TimedOut);
        drop(writer);
        assert_eq!(
            recv(&mut reader).await,
            Some(Err(IncompleteResponse::ClientStalled)),
            "what the client had not read is dropped, and it is not told the response ended"
        );
        assert!(!reader.is_finished());
    }

    #[tokio::test]
    async fn a_failed_response_delivers_its_output_then_the_failure() {
        let (writer, mut reader) = spool(limits(1024, 0, Duration::from_secs(1)), None);
        writer.send(Bytes::from_static(b"partial")).unwrap();
        writer.fail(IncompleteResponse::ScriptFailed);
        assert_eq!(
            recv(&mut reader).await,
            Some(Ok(Bytes::from_static(b"partial")))
        );
        assert_eq!(
            recv(&mut reader).await,
            Some(Err(IncompleteResponse::ScriptFailed))
        );
    }

    #[test]
    fn a_dropped_reader_unblocks_the_writer() {
        let (writer, reader) = spool(limits(1, 0, Duration::from_secs(30)), None);
        writer.send(Bytes::from_static(b"ab")).unwrap();
        let dropper = std::thread::spawn(move || {
            // Not synchronisation: the outcome is the same whichever comes first (a reader gone
            // before the send is `Closed` too). The pause lets the writer block first, the case
            // this test is about; the spool has no hook that says it is waiting.
            std::thread::sleep(Duration::from_millis(20));
            drop(reader);
        });
        assert_eq!(
            writer.send(Bytes::from_static(b"c")),
            Err(SendError::Closed)
        );
        assert!(writer.is_closed());
        dropper.join().unwrap();
    }

    #[tokio::test]
    async fn a_stalled_reader_of_a_failed_response_is_given_up_too() {
        let limits = limits(8, 1 << 20, Duration::from_millis(50));
        let disk = limits.disk.clone();
        let (writer, mut reader) = spool(limits, Some(Handle::current()));
        for _ in 0..10 {
            writer.send(Bytes::from_static(b"0123456789")).unwrap();
        }
        writer.fail(IncompleteResponse::RequestTimeout);
        watchdog_gives_up(&disk).await;
        assert_eq!(
            recv(&mut reader).await,
            Some(Err(IncompleteResponse::RequestTimeout)),
            "the response still tells why it broke off"
        );
    }

    #[tokio::test]
    async fn a_reader_that_stalls_after_the_script_ended_is_given_up() {
        let limits = limits(8, 1 << 20, Duration::from_millis(50));
        let disk = limits.disk.clone();
        let (writer, mut reader) = spool(limits, Some(Handle::current()));
        for _ in 0..10 {
            writer.send(Bytes::from_static(b"0123456789")).unwrap();
        }
        drop(writer); // the script ended; its output waits for the client
        watchdog_gives_up(&disk).await;
        assert_eq!(disk.used(), 0);
        assert_eq!(
            recv(&mut reader).await,
            Some(Err(IncompleteResponse::ClientStalled))
        );
    }
}
