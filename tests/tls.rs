//! HTTPS with rustls in front of real PHP: ALPN h2 and http/1.1, TLS 1.3 and 1.2, what PHP and
//! the profile headers see, no plain-HTTP fallback, and the handshake timeout.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{json, TestServer};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_php::layer::ProfileLayer;
use tokio_php::php::PoolConfig;
use tokio_php::server::{ServeConfig, Tls};
use tokio_rustls::TlsConnector;
use tower::Layer;

struct TlsServer {
    server: TestServer,
    cert: CertificateDer<'static>,
    _dir: tempfile::TempDir,
}

async fn tls_server(handshake_timeout: Duration) -> TlsServer {
    let dir = tempfile::tempdir().unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, generated.cert.pem()).unwrap();
    std::fs::write(&key_path, generated.signing_key.serialize_pem()).unwrap();
    let tls = Tls::from_pem_files(&cert_path, &key_path, handshake_timeout).unwrap();
    let serve_config = ServeConfig {
        tls: Some(tls),
        ..ServeConfig::default()
    };
    let pool = PoolConfig {
        workers: 1,
        ..PoolConfig::default()
    };
    let server = TestServer::serve_with(pool, serve_config, |pool| {
        ProfileLayer::new().layer(TestServer::php_service(pool))
    })
    .await;
    TlsServer {
        server,
        cert: generated.cert.der().clone(),
        _dir: dir,
    }
}

fn connector(
    cert: &CertificateDer<'static>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[u8],
) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    TlsConnector::from(Arc::new(config))
}

async fn get(
    tls: &TlsServer,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[u8],
    path: &str,
) -> Response<Bytes> {
    let tcp = TcpStream::connect(tls.server.addr).await.unwrap();
    let stream = connector(&tls.cert, versions, alpn)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(
        stream.get_ref().1.alpn_protocol(),
        Some(alpn),
        "ALPN picked what the client offered"
    );
    let io = TokioIo::new(stream);
    let request = Request::get(format!("https://localhost{path}"))
        .header("x-profile", "1")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = if alpn == b"h2" {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        sender.send_request(request).await.unwrap()
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let mut request = request;
        *request.uri_mut() = path.parse().unwrap();
        request
            .headers_mut()
            .insert("host", "localhost".parse().unwrap());
        sender.send_request(request).await.unwrap()
    };
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, body.collect().await.unwrap().to_bytes())
}

const TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
const TLS12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_h2_and_http11_reaches_php() {
    let tls = tls_server(Duration::from_secs(5)).await;
    for (alpn, protocol) in [(&b"h2"[..], "HTTP/2.0"), (&b"http/1.1"[..], "HTTP/1.1")] {
        let response = get(&tls, TLS13, alpn, "/server.php").await;
        let vars = json(&response);
        assert_eq!(vars["HTTPS"], "on");
        assert_eq!(vars["REQUEST_SCHEME"], "https");
        assert_eq!(vars["SSL_PROTOCOL"], "TLSv1_3");
        assert!(vars["SSL_CIPHER"].as_str().unwrap().starts_with("TLS13_"));
        assert_eq!(vars["SERVER_PROTOCOL"], protocol);
        let alpn = std::str::from_utf8(alpn).unwrap();
        assert_eq!(response.headers()["x-profile-tls-protocol"], "TLSv1_3");
        assert_eq!(response.headers()["x-profile-tls-alpn"], alpn);
        let handshake: u64 = response.headers()["x-profile-tls-handshake-us"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(handshake > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_clients_get_a_modern_suite() {
    let tls = tls_server(Duration::from_secs(5)).await;
    let vars = json(&get(&tls, TLS12, b"h2", "/server.php").await);
    assert_eq!(vars["SSL_PROTOCOL"], "TLSv1_2");
    let cipher = vars["SSL_CIPHER"].as_str().unwrap();
    assert!(
        cipher.starts_with("TLS_ECDHE_") && (cipher.contains("GCM") || cipher.contains("CHACHA20")),
        "{cipher}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_the_tls_port_gets_no_http_answer() {
    let tls = tls_server(Duration::from_secs(5)).await;
    let mut stream = TcpStream::connect(tls.server.addr).await.unwrap();
    stream
        .write_all(b"GET /index.php HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(
        !String::from_utf8_lossy(&answer).contains("index of"),
        "no fallback to plain HTTP"
    );
    assert!(!answer.starts_with(b"HTTP/"));
    // And the server still serves TLS afterwards.
    assert_eq!(get(&tls, TLS13, b"h2", "/index.php").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_dropped_after_the_handshake_timeout() {
    let tls = tls_server(Duration::from_millis(300)).await;
    let mut stream = TcpStream::connect(tls.server.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the server closed the silent connection: {read:?}"
    );
    assert_eq!(
        get(&tls, TLS13, b"http/1.1", "/index.php").await.status(),
        200
    );
}
