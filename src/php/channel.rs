//! A byte-bounded channel from a PHP worker thread (blocking, with a timeout) to the async
//! response body.
//!
//! The bound is in bytes, not messages, so a slow-reading client costs at most that much memory;
//! the send timeout bounds how long it can hold a PHP thread. A response that cannot be completed
//! ends with an [`IncompleteResponse`] instead of an ordinary end, so the client can tell.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::response::IncompleteResponse;

#[derive(Debug)]
struct State {
    queue: VecDeque<Bytes>,
    queued_bytes: usize,
    sender_done: bool,
    receiver_gone: bool,
    /// Set when the response will not be completed: the receiver yields it after the queue.
    failure: Option<IncompleteResponse>,
    waker: Option<Waker>,
}

impl State {
    fn wake_receiver(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    space_freed: Condvar,
    capacity: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the queue itself is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why a chunk was not delivered.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SendError {
    /// The response body was dropped: the client is gone.
    Closed,
    /// The client did not read for the whole timeout.
    TimedOut,
}

/// The PHP worker's end.
#[derive(Debug)]
pub(crate) struct ChunkSender {
    shared: Arc<Shared>,
}

/// The response body's end.
#[derive(Debug)]
pub(crate) struct ChunkReceiver {
    shared: Arc<Shared>,
}

/// A channel holding at most `capacity` bytes (a single larger chunk is always accepted when the
/// channel is empty, so progress never depends on chunk sizes).
pub(crate) fn chunk_channel(capacity: usize) -> (ChunkSender, ChunkReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            queued_bytes: 0,
            sender_done: false,
            receiver_gone: false,
            failure: None,
            waker: None,
        }),
        space_freed: Condvar::new(),
        capacity,
    });
    (
        ChunkSender {
            shared: shared.clone(),
        },
        ChunkReceiver { shared },
    )
}

impl ChunkSender {
    /// Blocks the calling (PHP) thread until there is room, the receiver is gone or `timeout`
    /// passes. A timeout gives the client up: what it has not read is dropped and the response
    /// ends as [`IncompleteResponse::ClientStalled`].
    pub(crate) fn send(&self, chunk: Bytes, timeout: Duration) -> Result<(), SendError> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            if state.receiver_gone {
                return Err(SendError::Closed);
            }
            if state.failure.is_some() {
                return Err(SendError::TimedOut);
            }
            if state.queued_bytes == 0 || state.queued_bytes + chunk.len() <= self.shared.capacity {
                state.queued_bytes += chunk.len();
                state.queue.push_back(chunk);
                state.wake_receiver();
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                state.queue.clear();
                state.queued_bytes = 0;
                state.failure = Some(IncompleteResponse::ClientStalled);
                state.wake_receiver();
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

    /// Whether the receiving body was dropped.
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.lock().receiver_gone
    }

    /// Ends the response as incomplete: the receiver gets what was sent, then `reason`.
    pub(crate) fn fail(self, reason: IncompleteResponse) {
        self.shared.lock().failure.get_or_insert(reason);
    }
}

impl Drop for ChunkSender {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.sender_done = true;
        state.wake_receiver();
    }
}

impl ChunkReceiver {
    /// The next chunk; once the sender finished and everything was taken, `None`, or the
    /// reason the response is incomplete.
    pub(crate) fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, IncompleteResponse>>> {
        let mut state = self.shared.lock();
        if let Some(chunk) = state.queue.pop_front() {
            state.queued_bytes -= chunk.len();
            self.shared.space_freed.notify_one();
            return Poll::Ready(Some(Ok(chunk)));
        }
        if let Some(failure) = state.failure {
            return Poll::Ready(Some(Err(failure)));
        }
        if state.sender_done {
            return Poll::Ready(None);
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Whether everything was received and the sender finished the response.
    pub(crate) fn is_finished(&self) -> bool {
        let state = self.shared.lock();
        state.sender_done && state.queue.is_empty() && state.failure.is_none()
    }
}

impl Drop for ChunkReceiver {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.receiver_gone = true;
        state.queue.clear();
        state.queued_bytes = 0;
        self.shared.space_freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    #[tokio::test]
    async fn chunks_arrive_in_order_then_end() {
        let (tx, mut rx) = chunk_channel(1024);
        let worker = std::thread::spawn(move || {
            for i in 0..50u8 {
                tx.send(Bytes::from(vec![i; 100]), Duration::from_secs(5))
                    .unwrap();
            }
        });
        let mut seen = Vec::new();
        while let Some(chunk) = poll_fn(|cx| rx.poll_recv(cx)).await {
            seen.push(chunk.unwrap()[0]);
        }
        worker.join().unwrap();
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
        assert!(rx.is_finished());
    }

    #[tokio::test]
    async fn a_full_channel_times_out_the_sender_and_breaks_the_response_off() {
        let (tx, mut rx) = chunk_channel(10);
        tx.send(Bytes::from_static(b"0123456789"), Duration::from_millis(10))
            .unwrap();
        let err = tx
            .send(Bytes::from_static(b"x"), Duration::from_millis(20))
            .unwrap_err();
        assert_eq!(err, SendError::TimedOut);
        drop(tx);
        assert_eq!(
            poll_fn(|cx| rx.poll_recv(cx)).await,
            Some(Err(IncompleteResponse::ClientStalled)),
            "the client is not told the response ended"
        );
        assert!(!rx.is_finished());
    }

    #[tokio::test]
    async fn a_failed_response_delivers_what_was_sent_then_the_failure() {
        let (tx, mut rx) = chunk_channel(1024);
        tx.send(Bytes::from_static(b"partial"), Duration::from_secs(1))
            .unwrap();
        tx.fail(IncompleteResponse::ScriptFailed);
        assert_eq!(
            poll_fn(|cx| rx.poll_recv(cx)).await,
            Some(Ok(Bytes::from_static(b"partial")))
        );
        assert_eq!(
            poll_fn(|cx| rx.poll_recv(cx)).await,
            Some(Err(IncompleteResponse::ScriptFailed))
        );
    }

    #[test]
    fn an_oversized_chunk_is_accepted_when_empty() {
        let (tx, _rx) = chunk_channel(4);
        tx.send(
            Bytes::from_static(b"much more than four"),
            Duration::from_millis(10),
        )
        .unwrap();
    }

    #[test]
    fn a_dropped_receiver_unblocks_the_sender() {
        let (tx, rx) = chunk_channel(1);
        tx.send(Bytes::from_static(b"ab"), Duration::from_secs(1))
            .unwrap();
        let dropper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            drop(rx);
        });
        assert_eq!(
            tx.send(Bytes::from_static(b"c"), Duration::from_secs(30)),
            Err(SendError::Closed)
        );
        assert!(tx.is_closed());
        dropper.join().unwrap();
    }
}
