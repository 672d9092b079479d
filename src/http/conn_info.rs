//! Facts about the connection a request arrived on, carried in request extensions.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Inserted into every request's extensions by the server; layers and [`PhpService`] read it
/// (`REMOTE_ADDR`, `SERVER_PORT`, `HTTPS`, ...).
///
/// Behind a load balancer the connection's peer is the balancer. When the peer is one of
/// `TRUSTED_PROXIES`, [`TrustForwardedLayer`] fills in [`forwarded`](ConnInfo::forwarded) from
/// its `Forwarded` / `X-Forwarded-*` headers, and the accessors ([`client_ip`](Self::client_ip),
/// [`is_https`](Self::is_https), [`server_port`](Self::server_port), ...) answer for the client
/// instead of the balancer. Everything that reports or keys on the client uses them.
///
/// [`PhpService`]: crate::php::PhpService
/// [`TrustForwardedLayer`]: crate::layer::TrustForwardedLayer
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    /// The address the connection was accepted on.
    pub local_addr: SocketAddr,
    /// The connection's peer: the client, or the load balancer in front of it.
    pub remote_addr: SocketAddr,
    /// The TLS session, when the connection is TLS.
    pub tls: Option<TlsInfo>,
    /// What a trusted proxy said about the client, when it said anything.
    pub forwarded: Option<Forwarded>,
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

/// The client as a trusted proxy reported it; each part is `None` when the proxy did not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Forwarded {
    /// The client's address (`for=` / `X-Forwarded-For`).
    pub client_ip: Option<IpAddr>,
    /// The client's port, when the proxy gave one (`for="[2001:db8::1]:4711"`).
    pub client_port: Option<u16>,
    /// Whether the client spoke HTTPS to the proxy (`proto=` / `X-Forwarded-Proto`).
    pub https: Option<bool>,
    /// The port the client connected to (`host=` with a port / `X-Forwarded-Port`).
    pub port: Option<u16>,
}

impl ConnInfo {
    /// Info for a plain-TCP connection.
    pub fn tcp(local_addr: SocketAddr, remote_addr: SocketAddr) -> Self {
        ConnInfo {
            local_addr,
            remote_addr,
            tls: None,
            forwarded: None,
        }
    }

    /// The client's address: a trusted proxy's word for it, or the peer's.
    pub fn client_ip(&self) -> IpAddr {
        self.forwarded
            .and_then(|f| f.client_ip)
            .unwrap_or(self.remote_addr.ip())
    }

    /// The client's port, when known: the peer's, unless a trusted proxy named another client.
    pub fn client_port(&self) -> Option<u16> {
        match self.forwarded {
            Some(Forwarded {
                client_ip: Some(_),
                client_port,
                ..
            }) => client_port,
            _ => Some(self.remote_addr.port()),
        }
    }

    /// Whether the client's request was HTTPS: a trusted proxy's word for it, or this
    /// connection's TLS.
    pub fn is_https(&self) -> bool {
        self.forwarded
            .and_then(|f| f.https)
            .unwrap_or(self.tls.is_some())
    }

    /// `https` or `http`, after [`is_https`](Self::is_https).
    pub fn scheme(&self) -> &'static str {
        if self.is_https() {
            "https"
        } else {
            "http"
        }
    }

    /// The port the client connected to: a trusted proxy's forwarded port, else the default port
    /// of the scheme it forwarded, else the port this connection was accepted on.
    pub fn server_port(&self) -> u16 {
        match self.forwarded {
            Some(Forwarded {
                port: Some(port), ..
            }) => port,
            Some(Forwarded {
                https: Some(https), ..
            }) => {
                if https {
                    443
                } else {
                    80
                }
            }
            _ => self.local_addr.port(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn behind_proxy(forwarded: Forwarded) -> ConnInfo {
        ConnInfo {
            forwarded: Some(forwarded),
            ..ConnInfo::tcp(
                "10.0.0.5:8080".parse().unwrap(),
                "10.0.0.1:40000".parse().unwrap(),
            )
        }
    }

    #[test]
    fn without_a_proxy_the_peer_is_the_client() {
        let conn = ConnInfo::tcp(
            "127.0.0.1:8080".parse().unwrap(),
            "192.0.2.7:5555".parse().unwrap(),
        );
        assert_eq!(conn.client_ip(), "192.0.2.7".parse::<IpAddr>().unwrap());
        assert_eq!(conn.client_port(), Some(5555));
        assert_eq!((conn.scheme(), conn.server_port()), ("http", 8080));
    }

    #[test]
    fn a_forwarded_client_hides_the_proxys_port() {
        let conn = behind_proxy(Forwarded {
            client_ip: Some("203.0.113.9".parse().unwrap()),
            ..Forwarded::default()
        });
        assert_eq!(conn.client_ip(), "203.0.113.9".parse::<IpAddr>().unwrap());
        assert_eq!(conn.client_port(), None);
        assert_eq!((conn.scheme(), conn.server_port()), ("http", 8080));
    }

    #[test]
    fn a_forwarded_scheme_without_a_port_implies_its_default_port() {
        let https = behind_proxy(Forwarded {
            https: Some(true),
            ..Forwarded::default()
        });
        assert_eq!((https.scheme(), https.server_port()), ("https", 443));
        let explicit = behind_proxy(Forwarded {
            https: Some(true),
            port: Some(8443),
            ..Forwarded::default()
        });
        assert_eq!(explicit.server_port(), 8443);
        assert_eq!(https.client_ip(), https.remote_addr.ip());
    }
}
