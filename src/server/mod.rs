//! Serving a tower service over TCP with hyper-util: HTTP/1.1 and HTTP/2 (h2c by prior
//! knowledge) on every connection, with graceful shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tower::Service;

use crate::http::{ConnInfo, HttpBody, HttpService};

mod idle;
mod tls;

use idle::{Activity, IdleIo};

pub use tls::{Tls, TlsError};

/// Live connection counts and the draining flag, shared with the internal server.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    active: AtomicUsize,
    accepted: AtomicU64,
    draining: AtomicBool,
    all_closed: tokio::sync::Notify,
}

impl ConnectionStats {
    /// Connections open now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Connections accepted since start.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Whether the server stopped accepting and is finishing in-flight requests.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    fn opened(self: &Arc<Self>) -> OpenConnection {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.accepted.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self.clone())
    }

    /// Waits until no connection is open.
    async fn all_closed(&self) {
        loop {
            let closed = self.all_closed.notified();
            let mut closed = std::pin::pin!(closed);
            closed.as_mut().enable();
            if self.active() == 0 {
                return;
            }
            closed.await;
        }
    }
}

/// Counts a connection as active until dropped.
struct OpenConnection(Arc<ConnectionStats>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.all_closed.notify_waiters();
        }
    }
}

/// Connection-level settings.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Names this listener in log lines (`http`, `internal`).
    pub name: &'static str,
    /// Where the server counts its connections (share it to report them).
    pub stats: Arc<ConnectionStats>,
    /// TLS for every connection (`None`: plain TCP).
    pub tls: Option<Tls>,
    /// An HTTP/1 client must send each request head within this time, counted from when the
    /// connection starts waiting for it — so it also closes idle keep-alive connections
    /// (slowloris protection).
    pub header_read_timeout: Duration,
    /// Largest HTTP/1 request head (request line and headers) in bytes; larger ones get `431`.
    pub max_header_size: usize,
    /// Most request header fields accepted (HTTP/1); more get `431`.
    pub max_headers: usize,
    /// Concurrent streams per HTTP/2 connection.
    pub h2_max_concurrent_streams: u32,
    /// Largest HTTP/2 header list in bytes.
    pub h2_max_header_list_size: u32,
    /// HTTP/2 pings at this interval detect dead peers; one unanswered for as long closes.
    pub h2_keep_alive_interval: Duration,
    /// A connection that moves no byte for this long is closed gracefully (HTTP/2: GOAWAY);
    /// requests in flight still finish.
    pub keep_alive_timeout: Duration,
    /// On shutdown, in-flight requests get this long to finish.
    pub drain_timeout: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            name: "http",
            stats: Arc::default(),
            tls: None,
            header_read_timeout: Duration::from_secs(30),
            max_header_size: 64 * 1024,
            max_headers: 100,
            h2_max_concurrent_streams: 250,
            h2_max_header_list_size: 64 * 1024,
            h2_keep_alive_interval: Duration::from_secs(20),
            keep_alive_timeout: Duration::from_secs(75),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

fn connection_builder(config: &ServeConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.max_header_size.max(8192))
        .max_headers(config.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(config.h2_max_concurrent_streams)
        .max_header_list_size(config.h2_max_header_list_size)
        .keep_alive_interval(config.h2_keep_alive_interval)
        .keep_alive_timeout(config.h2_keep_alive_interval);
    builder
}

/// Accepts connections on `listener` and serves `service` on each until `shutdown` completes,
/// then stops accepting and lets open connections finish (up to `drain_timeout`).
///
/// Every request carries a [`ConnInfo`] extension.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    config: ServeConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()>
where
    S: HttpService<Incoming, B>,
    B: HttpBody,
{
    let local_addr = listener.local_addr()?;
    let builder = Arc::new(connection_builder(&config));
    let (stop_connections, stopping) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);

    tracing::info!(server = config.name, %local_addr, tls = config.tls.is_some(), "listening");
    // Owns what it uses (a reference to `service` would make this future need `S: Sync`).
    let (stats, keep_alive_timeout, tls) = (
        config.stats.clone(),
        config.keep_alive_timeout,
        config.tls.clone(),
    );
    let spawn = move |stream: TcpStream, remote_addr: SocketAddr| {
        let _ = stream.set_nodelay(true);
        let lifecycle = Lifecycle {
            stopping: stopping.clone(),
            keep_alive_timeout,
            _open: stats.opened(),
        };
        let info = ConnInfo::tcp(local_addr, remote_addr);
        let (builder, service) = (Arc::clone(&builder), service.clone());
        match tls.clone() {
            None => {
                let service = WithConnInfo {
                    inner: service,
                    info,
                };
                tokio::spawn(serve_connection(builder, lifecycle, stream, service));
            }
            Some(tls) => {
                tokio::spawn(serve_tls_connection(
                    builder, lifecycle, tls, stream, service, info,
                ));
            }
        }
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, remote_addr)) => spawn(stream, remote_addr),
                Err(error) => accept_error_pause(&error).await,
            },
            () = &mut shutdown => break,
        }
    }

    // Connections the kernel completed before the shutdown are clients that already sent, or
    // are sending, a request (a balancer's, typically): serve them rather than let closing the
    // listener reset them.
    for (stream, remote_addr) in queued_connections(&listener) {
        spawn(stream, remote_addr);
    }
    drop(listener);
    config.stats.draining.store(true, Ordering::Relaxed);
    let _ = stop_connections.send(true);
    tracing::info!("shutting down: draining open connections");
    tokio::select! {
        () = config.stats.all_closed() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(config.drain_timeout) => {
            tracing::warn!("drain timeout passed with connections still open");
        }
    }
    Ok(())
}

/// The connections waiting in the listener's accept queue, taken without waiting.
fn queued_connections(listener: &TcpListener) -> Vec<(TcpStream, SocketAddr)> {
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    std::iter::from_fn(|| match listener.poll_accept(&mut context) {
        std::task::Poll::Ready(Ok(connection)) => Some(connection),
        _ => None,
    })
    .collect()
}

/// Inserts the connection's [`ConnInfo`] into each request's extensions.
#[derive(Debug, Clone)]
struct WithConnInfo<S> {
    inner: S,
    info: ConnInfo,
}

impl<S, B> Service<Request<B>> for WithConnInfo<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> S::Future {
        request.extensions_mut().insert(self.info);
        self.inner.call(request)
    }
}

/// What a connection task needs besides its IO and service.
struct Lifecycle {
    /// Turns true when the server shuts down.
    stopping: tokio::sync::watch::Receiver<bool>,
    keep_alive_timeout: Duration,
    /// Counts the connection as open while the task lives.
    _open: OpenConnection,
}

/// A named generic `async fn` (not an inline `async` block) keeps the connection future's bounds
/// provable (rust-lang/rust#64552).
///
/// The connection is asked to shut down gracefully (HTTP/2 GOAWAY, HTTP/1 close after the current
/// response; requests in flight finish) when the server stops or no byte moved for the
/// keep-alive timeout. A connection that has sent nothing yet when the server stops gets
/// [`FIRST_REQUEST_GRACE`] first: hyper closes such a connection at once, and it may be a
/// balancer's, opened just before the drain with its request on the way.
async fn serve_connection<IO, S, B>(
    builder: Arc<auto::Builder<TokioExecutor>>,
    mut lifecycle: Lifecycle,
    io: IO,
    service: S,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService<Incoming, B>,
    B: HttpBody,
{
    let activity = Activity::new();
    let io = TokioIo::new(IdleIo::new(io, activity.clone()));
    let connection = builder.serve_connection(io, TowerToHyperService::new(service));
    let mut connection = std::pin::pin!(connection);
    // When the server's stop reaches this connection, and whether it was passed on to hyper.
    let mut stop_at = None;
    let mut closing = false;
    if *lifecycle.stopping.borrow() {
        stop_at = Some(graceful_stop_at(&activity));
    }
    loop {
        if stop_at.is_some_and(|at| activity.has_received() || at <= tokio::time::Instant::now())
            && !closing
        {
            closing = true;
            connection.as_mut().graceful_shutdown();
        }
        let idle_at = activity.idle_deadline(lifecycle.keep_alive_timeout);
        // Waiting for a stopped connection's first request: shut down in the poll that reads
        // it, so that hyper closes the connection after that one response (with `connection:
        // close`, unless the response was already written in the same poll).
        let awaiting_first_request = stop_at.is_some() && !closing;
        let shut_down_on_first_bytes = AtomicBool::new(false);
        let connection_done = std::future::poll_fn(|cx| {
            let poll = connection.as_mut().poll(cx);
            if poll.is_pending()
                && awaiting_first_request
                && !shut_down_on_first_bytes.load(Ordering::Relaxed)
                && activity.has_received()
            {
                shut_down_on_first_bytes.store(true, Ordering::Relaxed);
                connection.as_mut().graceful_shutdown();
                cx.waker().wake_by_ref();
            }
            poll
        });
        tokio::select! {
            result = connection_done => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            changed = lifecycle.stopping.changed(), if stop_at.is_none() => {
                if changed.is_err() || *lifecycle.stopping.borrow() {
                    stop_at = Some(graceful_stop_at(&activity));
                }
            }
            () = sleep_until_some(stop_at), if !closing => {}
            () = tokio::time::sleep_until(idle_at), if !closing && stop_at.is_none() => {
                if activity.idle_deadline(lifecycle.keep_alive_timeout) <= tokio::time::Instant::now() {
                    tracing::debug!("closing an idle connection");
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
        closing |= shut_down_on_first_bytes.into_inner();
    }
}

/// How long a connection that has sent nothing yet gets, once the server stops, to send its
/// request.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// When a stopping server shuts `activity`'s connection down: now, unless it has sent nothing
/// yet (then after [`FIRST_REQUEST_GRACE`], or in the poll that reads its first bytes).
fn graceful_stop_at(activity: &Activity) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    if activity.has_received() {
        now
    } else {
        now + FIRST_REQUEST_GRACE
    }
}

async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The TLS handshake (bounded by its timeout), then the connection as usual.
async fn serve_tls_connection<S, B>(
    builder: Arc<auto::Builder<TokioExecutor>>,
    lifecycle: Lifecycle,
    tls: Tls,
    stream: TcpStream,
    service: S,
    mut info: ConnInfo,
) where
    S: HttpService<Incoming, B>,
    B: HttpBody,
{
    match tls.accept(stream).await {
        Ok((stream, session)) => {
            info.tls = Some(session);
            let service = WithConnInfo {
                inner: service,
                info,
            };
            serve_connection(builder, lifecycle, stream, service).await;
        }
        Err(error) => {
            tracing::debug!(%error, client = %info.remote_addr, "TLS handshake failed");
        }
    }
}

/// Running out of file descriptors makes `accept` fail in a tight loop; back off briefly.
async fn accept_error_pause(error: &io::Error) {
    tracing::warn!(%error, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Binds a listener on `addr`.
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Resolves on SIGINT or SIGTERM.
///
/// The handlers are installed when this is called, not when the future is first polled: a
/// signal that arrives in between (say, right after the server logged that it listens) must
/// start the drain, not kill the process with the signal's default action. Call it inside a
/// tokio runtime, before the listener is bound.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
        let mut terminate = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
        async move {
            tokio::select! {
                _ = interrupt.recv() => {},
                _ = terminate.recv() => {},
            }
            tracing::info!("shutdown signal received");
        }
    }
    #[cfg(not(unix))]
    async move {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown signal received");
    }
}
