//! Facts about the connection a request arrived on, carried in request extensions.

use std::net::SocketAddr;

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
    /// Whether the connection is TLS.
    pub tls: bool,
}

impl ConnInfo {
    /// Info for a plain-TCP connection.
    pub fn tcp(local_addr: SocketAddr, remote_addr: SocketAddr) -> Self {
        ConnInfo {
            local_addr,
            remote_addr,
            tls: false,
        }
    }
}
