//! `TRUSTED_PROXIES`: take the client's address, scheme and port from a trusted load balancer's
//! `Forwarded` (RFC 7239) or `X-Forwarded-For` / `-Proto` / `-Port` headers.
//!
//! Behind a balancer the connection's peer is the balancer, so without this every request
//! seems to come from it: one rate-limit bucket for everyone, the balancer's address in
//! `REMOTE_ADDR` and the logs, `http` where the client used `https`. The headers are believed
//! only when the peer is in the trusted list; from any other peer they change nothing (a client
//! can write them too).
//!
//! The client is found the way nginx's `real_ip_recursive on` finds it: the list of addresses
//! (`for=` elements, or `X-Forwarded-For`'s entries, in header order) is read from the right,
//! skipping addresses that are themselves trusted proxies; the first one that is not is the
//! client. A value that does not parse (`unknown`, an obfuscated `_node`, garbage) stops the walk:
//! the client is then the last address known, and nothing left of it is believed. The scheme and
//! port come from the same hop: the chosen `Forwarded` element's `proto=` and `host=` port, or the
//! `X-Forwarded-Proto` / `-Port` entry at the same position when those lists are as long as
//! `X-Forwarded-For`, and their last entry otherwise (what the trusted peer itself set).
//! `Forwarded` wins over `X-Forwarded-*` when a request has both.
//!
//! The result goes into [`ConnInfo::forwarded`]; [`ConnInfo::client_ip`],
//! [`is_https`](ConnInfo::is_https) and [`server_port`](ConnInfo::server_port) follow it, and
//! with them `$_SERVER` (`REMOTE_ADDR`, `REMOTE_PORT`, `HTTPS`, `REQUEST_SCHEME`, `SERVER_PORT`),
//! the access log, the rate limiter's key and the OpenTelemetry span's `client.address`. Put the
//! layer outside all of those.
//!
//! ```
//! use tokio_php::http::ConnInfo;
//! use tokio_php::layer::{TrustForwardedLayer, forwarded::TrustedProxies};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let trusted: TrustedProxies = "10.0.0.0/8, ::1".parse().unwrap();
//! let service = ServiceBuilder::new()
//!     .layer(TrustForwardedLayer::new(trusted))
//!     .service_fn(|request: http::Request<()>| async move {
//!         let conn = request.extensions().get::<ConnInfo>().unwrap();
//!         let seen = format!("{} {} {}", conn.client_ip(), conn.scheme(), conn.server_port());
//!         Ok::<_, std::convert::Infallible>(http::Response::new(seen))
//!     });
//! let mut request = http::Request::builder()
//!     .header("x-forwarded-for", "203.0.113.7, 10.1.2.3")
//!     .header("x-forwarded-proto", "https")
//!     .body(())
//!     .unwrap();
//! request.extensions_mut().insert(ConnInfo::tcp(
//!     "10.0.0.5:8080".parse().unwrap(),
//!     "10.0.0.1:51000".parse().unwrap(), // the balancer: trusted
//! ));
//! let response = service.oneshot(request).await.unwrap();
//! assert_eq!(response.body(), "203.0.113.7 https 443");
//! # }
//! ```

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::FORWARDED;
use http::{HeaderMap, HeaderName, Request};
use tower::{Layer, Service};

use crate::http::{ConnInfo, Forwarded};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

/// One trusted network: an address and a prefix length (`10.0.0.0/8`, `::1/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNetwork {
    address: IpAddr,
    prefix: u8,
}

impl IpNetwork {
    /// Whether `ip` is inside this network. An IPv4 address seen as IPv6 (`::ffff:10.0.0.1`, on
    /// a dual-stack listener) counts as the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => {
                prefix_matches(&network.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(network), IpAddr::V6(ip)) => {
                prefix_matches(&network.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_matches(network: &[u8], ip: &[u8], prefix: u8) -> bool {
    let (whole, bits) = (usize::from(prefix / 8), prefix % 8);
    if network[..whole] != ip[..whole] {
        return false;
    }
    bits == 0 || (network[whole] ^ ip[whole]) >> (8 - bits) == 0
}

impl FromStr for IpNetwork {
    type Err = InvalidNetwork;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidNetwork(text.to_string());
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address.parse().map_err(|_| invalid())?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.parse::<u8>().map_err(|_| invalid())?,
            None => max,
        };
        if prefix > max {
            return Err(invalid());
        }
        Ok(IpNetwork { address, prefix })
    }
}

impl fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// A `TRUSTED_PROXIES` entry that is not an address or `address/prefix`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address or network (e.g. 10.0.0.0/8, 192.0.2.7, ::1)")]
pub struct InvalidNetwork(pub String);

/// The `TRUSTED_PROXIES` list: networks separated by commas or spaces. Empty trusts nobody.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrustedProxies {
    networks: Vec<IpNetwork>,
}

impl TrustedProxies {
    /// Whether `ip` belongs to a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|network| network.contains(ip))
    }

    /// Whether the list trusts nobody.
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }
}

impl FromStr for TrustedProxies {
    type Err = InvalidNetwork;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let networks = text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|entry| !entry.is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        Ok(TrustedProxies { networks })
    }
}

impl serde::Serialize for TrustedProxies {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let networks: Vec<String> = self.networks.iter().map(ToString::to_string).collect();
        f.write_str(&networks.join(","))
    }
}

/// Applies [`TrustedProxies`] to each request's [`ConnInfo`]. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct TrustForwardedLayer {
    trusted: Arc<TrustedProxies>,
}

impl TrustForwardedLayer {
    /// Believes forwarding headers from peers in `trusted`.
    pub fn new(trusted: TrustedProxies) -> Self {
        TrustForwardedLayer {
            trusted: Arc::new(trusted),
        }
    }
}

impl<S> Layer<S> for TrustForwardedLayer {
    type Service = TrustForwarded<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TrustForwarded {
            inner,
            trusted: self.trusted.clone(),
        }
    }
}

/// The service produced by [`TrustForwardedLayer`].
#[derive(Debug, Clone)]
pub struct TrustForwarded<S> {
    inner: S,
    trusted: Arc<TrustedProxies>,
}

impl<S, ReqBody> Service<Request<ReqBody>> for TrustForwarded<S>
where
    S: Service<Request<ReqBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let peer = request
            .extensions()
            .get::<ConnInfo>()
            .map(|c| c.remote_addr.ip());
        if peer.is_some_and(|peer| self.trusted.contains(peer)) {
            let forwarded = forwarded_client(request.headers(), &self.trusted);
            if let Some(conn) = request.extensions_mut().get_mut::<ConnInfo>() {
                conn.forwarded = forwarded;
            }
        }
        self.inner.call(request)
    }
}

/// What the headers of a request from a trusted peer say about the client.
pub fn forwarded_client(headers: &HeaderMap, trusted: &TrustedProxies) -> Option<Forwarded> {
    let forwarded = if headers.contains_key(FORWARDED) {
        from_forwarded(headers, trusted)
    } else {
        from_x_forwarded(headers, trusted)
    };
    forwarded.filter(|f| *f != Forwarded::default())
}

/// One hop of a `Forwarded` header: its `for`, `proto` and `host` parameters.
#[derive(Debug, Default)]
struct Hop<'a> {
    for_node: Option<String>,
    proto: Option<String>,
    host: Option<&'a str>,
}

fn from_forwarded(headers: &HeaderMap, trusted: &TrustedProxies) -> Option<Forwarded> {
    let values = header_values(headers, &FORWARDED)?;
    let hops: Vec<Hop> = values
        .iter()
        .flat_map(|v| split_outside_quotes(v, ','))
        .map(parse_hop)
        .collect();
    let nodes: Vec<Option<(IpAddr, Option<u16>)>> = hops
        .iter()
        .map(|hop| hop.for_node.as_deref().and_then(parse_node))
        .collect();
    let chosen = choose_client(&nodes, trusted)?;
    let hop = &hops[chosen.index];
    Some(Forwarded {
        client_ip: chosen.node.map(|(ip, _)| ip),
        client_port: chosen.node.and_then(|(_, port)| port),
        https: hop.proto.as_deref().and_then(parse_proto),
        port: hop.host.and_then(host_port),
    })
}

fn from_x_forwarded(headers: &HeaderMap, trusted: &TrustedProxies) -> Option<Forwarded> {
    let entries = list_entries(headers, &X_FORWARDED_FOR);
    let nodes: Vec<Option<(IpAddr, Option<u16>)>> =
        entries.iter().map(|entry| parse_node(entry)).collect();
    let chosen = choose_client(&nodes, trusted);
    let same_hop = |name: &HeaderName| {
        let values = list_entries(headers, name);
        match chosen {
            Some(chosen) if values.len() == entries.len() => values.get(chosen.index).copied(),
            _ => values.last().copied(),
        }
    };
    Some(Forwarded {
        client_ip: chosen.and_then(|c| c.node).map(|(ip, _)| ip),
        client_port: chosen.and_then(|c| c.node).and_then(|(_, port)| port),
        https: same_hop(&X_FORWARDED_PROTO).and_then(parse_proto),
        port: same_hop(&X_FORWARDED_PORT).and_then(|port| port.parse().ok()),
    })
}

/// The hop the client was found at, and its address (`None`: the walk stopped at a value that
/// does not parse right of every untrusted address, so no client address is believed).
#[derive(Debug, Clone, Copy)]
struct Chosen {
    index: usize,
    node: Option<(IpAddr, Option<u16>)>,
}

/// Reads `nodes` from the right, skipping trusted proxies; see the module docs.
fn choose_client(
    nodes: &[Option<(IpAddr, Option<u16>)>],
    trusted: &TrustedProxies,
) -> Option<Chosen> {
    let mut last_known = None;
    for (index, node) in nodes.iter().enumerate().rev() {
        match node {
            Some((ip, _)) if trusted.contains(*ip) => {
                last_known = Some(Chosen { index, node: *node })
            }
            Some(_) => return Some(Chosen { index, node: *node }),
            None => {
                return Some(last_known.unwrap_or(Chosen { index, node: None }));
            }
        }
    }
    last_known
}

fn header_values<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<Vec<&'a str>> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect();
    (!values.is_empty()).then_some(values)
}

/// A comma-separated header's entries over all its lines, trimmed, in order.
fn list_entries<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .collect()
}

/// Splits at `separator`s that are not inside a quoted string.
fn split_outside_quotes(text: &str, separator: char) -> Vec<&str> {
    let (mut parts, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_hop(element: &str) -> Hop<'_> {
    let mut hop = Hop::default();
    for pair in split_outside_quotes(element, ';') {
        let Some((name, value)) = pair.split_once('=') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "for" => hop.for_node = Some(unquote(value)),
            "proto" => hop.proto = Some(unquote(value)),
            "host" => hop.host = Some(value.trim_matches('"')),
            _ => {}
        }
    }
    hop
}

fn unquote(value: &str) -> String {
    match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => value.to_string(),
    }
}

/// An address with an optional port: `192.0.2.7`, `192.0.2.7:4711`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:4711`. Anything else (`unknown`, `_hidden`) is `None`.
fn parse_node(node: &str) -> Option<(IpAddr, Option<u16>)> {
    let node = node.trim();
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some((ip, None));
    }
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some((addr.ip(), Some(addr.port())));
    }
    let bracketed = node.strip_prefix('[')?.strip_suffix(']')?;
    bracketed.parse::<IpAddr>().ok().map(|ip| (ip, None))
}

fn parse_proto(proto: &str) -> Option<bool> {
    match proto.trim().to_ascii_lowercase().as_str() {
        "https" => Some(true),
        "http" => Some(false),
        _ => None,
    }
}

/// The port of a `host=` value (`example.com:8443`, `[2001:db8::1]:8443`), when it has one.
fn host_port(host: &str) -> Option<u16> {
    let port = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split_once("]:")?.1,
        None => match host.rsplit_once(':')? {
            (name, _) if name.contains(':') => return None,
            (_, port) => port,
        },
    };
    port.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn trusted() -> TrustedProxies {
        "10.0.0.0/8, 2001:db8:ffff::/48".parse().unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    fn client(pairs: &[(&str, &str)]) -> Option<Forwarded> {
        forwarded_client(&headers(pairs), &trusted())
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn networks_parse_and_match_by_prefix() {
        let list: TrustedProxies = "10.0.0.0/8 192.0.2.7,::1, 2001:db8::/32".parse().unwrap();
        assert_eq!(
            list.to_string(),
            "10.0.0.0/8,192.0.2.7/32,::1/128,2001:db8::/32"
        );
        for inside in [
            "10.255.0.1",
            "192.0.2.7",
            "::1",
            "2001:db8:1::9",
            "::ffff:10.0.0.1",
        ] {
            assert!(list.contains(inside.parse().unwrap()), "{inside}");
        }
        for outside in ["11.0.0.1", "192.0.2.8", "::2", "2001:db9::1", "0.0.0.0"] {
            assert!(!list.contains(outside.parse().unwrap()), "{outside}");
        }
        let odd: TrustedProxies = "172.16.0.0/12".parse().unwrap();
        assert!(odd.contains("172.31.255.255".parse().unwrap()));
        assert!(!odd.contains("172.32.0.0".parse().unwrap()));
        assert!("".parse::<TrustedProxies>().unwrap().is_empty());
    }

    #[test]
    fn bad_networks_are_refused_with_the_entry() {
        for bad in [
            "10.0.0.0/33",
            "::1/129",
            "10.0.0/8",
            "proxy.local",
            "10.0.0.0/x",
        ] {
            let error = format!("10.0.0.1, {bad}")
                .parse::<TrustedProxies>()
                .unwrap_err();
            assert_eq!(error, InvalidNetwork(bad.to_string()));
        }
    }

    #[test]
    fn x_forwarded_for_skips_trusted_hops_from_the_right() {
        let seen = client(&[("x-forwarded-for", "198.51.100.1, 203.0.113.7, 10.1.1.1")]).unwrap();
        assert_eq!(seen.client_ip, ip("203.0.113.7"));
        // Every hop trusted: the leftmost is the client.
        let seen = client(&[("x-forwarded-for", "10.9.9.9, 10.1.1.1")]).unwrap();
        assert_eq!(seen.client_ip, ip("10.9.9.9"));
        // Split over two header lines, in order.
        let seen = client(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-for", "10.1.1.1"),
        ]);
        assert_eq!(seen.unwrap().client_ip, ip("203.0.113.7"));
    }

    #[test]
    fn a_client_cannot_push_a_spoofed_address_past_the_proxy() {
        // The client wrote "X-Forwarded-For: 10.0.0.99" (a trusted address) itself; the balancer
        // appended the address it saw. The walk stops at the first untrusted one: the real client.
        let seen = client(&[("x-forwarded-for", "10.0.0.99, 198.51.100.23")]).unwrap();
        assert_eq!(seen.client_ip, ip("198.51.100.23"));
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_known_address() {
        let seen = client(&[("x-forwarded-for", "203.0.113.7, not-an-ip, 10.1.1.1")]).unwrap();
        assert_eq!(seen.client_ip, ip("10.1.1.1"));
        assert_eq!(client(&[("x-forwarded-for", "unknown")]), None);
    }

    #[test]
    fn proto_and_port_come_from_the_same_hop_or_the_last_entry() {
        let seen = client(&[
            ("x-forwarded-for", "203.0.113.7, 10.1.1.1"),
            ("x-forwarded-proto", "https, http"),
            ("x-forwarded-port", "443, 80"),
        ])
        .unwrap();
        assert_eq!((seen.https, seen.port), (Some(true), Some(443)));
        let seen = client(&[
            ("x-forwarded-for", "203.0.113.7, 10.1.1.1"),
            ("x-forwarded-proto", "https"),
        ])
        .unwrap();
        assert_eq!((seen.https, seen.port), (Some(true), None));
        let seen = client(&[
            ("x-forwarded-proto", "gopher"),
            ("x-forwarded-port", "99999"),
        ]);
        assert_eq!(seen, None);
    }

    #[test]
    fn forwarded_elements_with_ports_quotes_and_ipv6() {
        let seen = client(&[(
            "forwarded",
            r#"for="[2001:db8:cafe::17]:4711";proto=https;host="example.com:8443", for=10.1.1.1;proto=http"#,
        )])
        .unwrap();
        assert_eq!(seen.client_ip, ip("2001:db8:cafe::17"));
        assert_eq!(seen.client_port, Some(4711));
        assert_eq!((seen.https, seen.port), (Some(true), Some(8443)));
        let seen = client(&[("Forwarded", "For=192.0.2.60;Proto=http;By=203.0.113.43")]).unwrap();
        assert_eq!(
            (seen.client_ip, seen.https, seen.port),
            (ip("192.0.2.60"), Some(false), None)
        );
    }

    #[test]
    fn forwarded_wins_over_x_forwarded_and_obfuscated_nodes_stop_the_walk() {
        let seen = client(&[
            ("forwarded", "for=192.0.2.60"),
            ("x-forwarded-for", "198.51.100.1"),
        ])
        .unwrap();
        assert_eq!(seen.client_ip, ip("192.0.2.60"));
        let seen = client(&[("forwarded", "for=_hidden;proto=https, for=10.2.2.2")]).unwrap();
        assert_eq!((seen.client_ip, seen.https), (ip("10.2.2.2"), None));
        let seen = client(&[("forwarded", "for=unknown;proto=https")]).unwrap();
        assert_eq!((seen.client_ip, seen.https), (None, Some(true)));
        // A comma inside quotes does not split elements.
        let seen = client(&[("forwarded", r#"for="192.0.2.1";host="a,b:81""#)]).unwrap();
        assert_eq!((seen.client_ip, seen.port), (ip("192.0.2.1"), Some(81)));
    }

    #[test]
    fn host_ports() {
        assert_eq!(host_port("example.com:8443"), Some(8443));
        assert_eq!(host_port("example.com"), None);
        assert_eq!(host_port("[2001:db8::1]:8443"), Some(8443));
        assert_eq!(host_port("[2001:db8::1]"), None);
        assert_eq!(host_port("2001:db8::1"), None);
    }
}
