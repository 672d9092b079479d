//! Connection idleness: an IO wrapper that records when bytes last moved, for the keep-alive
//! timeout that closes connections nobody uses (HTTP/1 between requests, HTTP/2 with no streams
//! talking).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Duration, Instant};

/// When a connection last sent or received a byte, and whether it ever received one.
#[derive(Debug, Clone)]
pub(crate) struct Activity {
    origin: Instant,
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Milliseconds from `origin` to the last byte moved.
    last_ms: AtomicU64,
    received: AtomicBool,
}

impl Activity {
    pub(crate) fn new() -> Activity {
        Activity {
            origin: Instant::now(),
            state: Arc::default(),
        }
    }

    /// Whether the peer has sent anything yet (for TLS: anything after the handshake).
    pub(crate) fn has_received(&self) -> bool {
        self.state.received.load(Ordering::Relaxed)
    }

    fn touch(&self) {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.state.last_ms.store(now, Ordering::Relaxed);
    }

    fn received(&self) {
        if !self.has_received() {
            self.state.received.store(true, Ordering::Relaxed);
        }
    }

    /// When the connection becomes idle for `timeout`, unless bytes move before then.
    pub(crate) fn idle_deadline(&self, timeout: Duration) -> Instant {
        self.origin + Duration::from_millis(self.state.last_ms.load(Ordering::Relaxed)) + timeout
    }
}

pin_project_lite::pin_project! {
    /// Passes IO through, noting each read or write that moved bytes.
    pub(crate) struct IdleIo<T> {
        #[pin]
        inner: T,
        activity: Activity,
    }
}

impl<T> IdleIo<T> {
    pub(crate) fn new(inner: T, activity: Activity) -> Self {
        IdleIo { inner, activity }
    }
}

impl<T: AsyncRead> AsyncRead for IdleIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let result = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
            this.activity.received();
        }
        result
    }
}

impl<T: AsyncWrite> AsyncWrite for IdleIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let result = this.inner.poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let result = this.inner.poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
