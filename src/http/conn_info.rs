//! Facts about the connection a request arrived on, carried in request extensions.

use std::net::SocketAddr;
use std::time::Duration;

/// Inserted into every request's extensions by the server; layers and [`PhpService`] read it
/// (`REMOTE_ADDR`, `SERVER_PORT`, `HTTPS`, ...).
///
/// [`PhpService`]: crate::php::PhpService
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    /// The address the connection was accepted on.
    pub local_addr: SocketAddr,
    /// The client's address.
    pub remote_addr: SocketAddr,
    /// The TLS session, when the connection is TLS.
    pub tls: Option<TlsInfo>,
}

/// What the TLS handshake settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1_3` or `TLSv1_2`.
    pub protocol: &'static str,
    /// The cipher suite, e.g. `TLS13_AES_128_GCM_SHA256`.
    pub cipher: &'static str,
    /// The protocol chosen by ALPN (`h2`, `http/1.1`), if the client offered any.
    pub alpn: Option<&'static str>,
    /// How long the handshake took.
    pub handshake: Duration,
}

impl ConnInfo {
    /// Info for a plain-TCP connection.
    pub fn tcp(local_addr: SocketAddr, remote_addr: SocketAddr) -> Self {
        ConnInfo {
            local_addr,
            remote_addr,
            tls: None,
        }
    }
}
