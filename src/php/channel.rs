//! A byte-bounded channel from a PHP worker thread (blocking, with a timeout) to the async
//! response body.
//!
//! The bound is in bytes, not messages, so a slow-reading client costs at most that much memory;
//! the send timeout bounds how long it can hold a PHP thread.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;

#[derive(Debug)]
struct State {
    queue: VecDeque<Bytes>,
    queued_bytes: usize,
    sender_done: bool,
    receiver_gone: bool,
    waker: Option<Waker>,
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
    /// passes.
    pub(crate) fn send(&self, chunk: Bytes, timeout: Duration) -> Result<(), SendError> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            if state.receiver_gone {
                return Err(SendError::Closed);
            }
            if state.queued_bytes == 0 || state.queued_bytes + chunk.len() <= self.shared.capacity {
                state.queued_bytes += chunk.len();
                state.queue.push_back(chunk);
                if let Some(waker) = state.waker.take() {
                    waker.wake();
                }
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
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
}

impl Drop for ChunkSender {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.sender_done = true;
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }
}

impl ChunkReceiver {
    /// The next chunk; `None` once the sender finished and everything was taken.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let mut state = self.shared.lock();
        if let Some(chunk) = state.queue.pop_front() {
            state.queued_bytes -= chunk.len();
            self.shared.space_freed.notify_one();
            return Poll::Ready(Some(chunk));
        }
        if state.sender_done {
            return Poll::Ready(None);
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Whether everything was received and the sender is finished.
    pub(crate) fn is_finished(&self) -> bool {
        let state = self.shared.lock();
        state.sender_done && state.queue.is_empty()
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
            seen.push(chunk[0]);
        }
        worker.join().unwrap();
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
        assert!(rx.is_finished());
    }

    #[test]
    fn a_full_channel_times_out_the_sender() {
        let (tx, _rx) = chunk_channel(10);
        tx.send(Bytes::from_static(b"0123456789"), Duration::from_millis(10))
            .unwrap();
        let err = tx
            .send(Bytes::from_static(b"x"), Duration::from_millis(20))
            .unwrap_err();
        assert_eq!(err, SendError::TimedOut);
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
