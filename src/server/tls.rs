//! TLS with rustls: certificate loading, the server configuration, and the handshake.
//!
//! TLS 1.3 and TLS 1.2 only, with rustls' (ring) cipher suites — all AEAD with forward secrecy;
//! nothing older or weaker is offered. ALPN offers `h2` then `http/1.1`.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::http::TlsInfo;

/// Why TLS could not be set up; the message names the file and the problem.
#[derive(Debug)]
pub struct TlsError(String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// The TLS side of a listener.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish()
    }
}

impl Tls {
    /// Loads a PEM certificate chain and private key (PKCS#8, PKCS#1 or SEC1). Fails, naming the
    /// file, when either is unreadable, empty or the key does not belong to the certificate.
    pub fn from_pem_files(
        cert: &Path,
        key: &Path,
        handshake_timeout: Duration,
    ) -> Result<Tls, TlsError> {
        let chain = load_chain(cert)?;
        let key_der = load_key(key)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError(format!("TLS setup: {e}")))?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)
            .map_err(|e| {
                TlsError(format!(
                    "TLS_KEY={} does not fit TLS_CERT={}: {e}",
                    key.display(),
                    cert.display()
                ))
            })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            handshake_timeout,
        })
    }

    /// Runs the handshake within the timeout; returns the stream and what was negotiated.
    pub async fn accept<IO>(&self, io: IO) -> std::io::Result<(TlsStream<IO>, TlsInfo)>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let started = Instant::now();
        let stream = tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(io))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
            })??;
        let session = stream.get_ref().1;
        let info = TlsInfo {
            protocol: session
                .protocol_version()
                .and_then(|v| v.as_str())
                .unwrap_or("unknown"),
            cipher: session
                .negotiated_cipher_suite()
                .and_then(|s| s.suite().as_str())
                .unwrap_or("unknown"),
            alpn: match session.alpn_protocol() {
                Some(b"h2") => Some("h2"),
                Some(b"http/1.1") => Some("http/1.1"),
                _ => None,
            },
            handshake: started.elapsed(),
        };
        Ok((stream, info))
    }
}

fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let named = |problem: String| TlsError(format!("TLS_CERT={}: {problem}", path.display()));
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| named(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| named(format!("not valid PEM: {e}")))?;
    if chain.is_empty() {
        return Err(named("no PEM certificate in the file".into()));
    }
    Ok(chain)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        TlsError(format!(
            "TLS_KEY={}: no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}",
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn write_pair(dir: &Path) -> (PathBuf, PathBuf) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        std::fs::write(&cert_path, cert.cert.pem()).unwrap();
        std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    fn error(cert: &Path, key: &Path) -> String {
        Tls::from_pem_files(cert, key, Duration::from_secs(5))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_matching_pair_loads() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path());
        Tls::from_pem_files(&cert, &key, Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn bad_files_are_refused_naming_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path());
        let other = tempfile::tempdir().unwrap();
        let (_, other_key) = write_pair(other.path());
        let missing = dir.path().join("missing.pem");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a pem file").unwrap();

        let message = error(&missing, &key);
        assert!(
            message.starts_with(&format!("TLS_CERT={}", missing.display())),
            "{message}"
        );
        let message = error(&garbage, &key);
        assert!(message.contains("no PEM certificate"), "{message}");
        let message = error(&cert, &garbage);
        assert!(
            message.starts_with(&format!("TLS_KEY={}", garbage.display())),
            "{message}"
        );
        let message = error(&cert, &other_key);
        assert!(message.contains("does not fit"), "{message}");
        let message = error(&key, &key);
        assert!(
            message.contains("no PEM certificate"),
            "a key is not a certificate: {message}"
        );
    }
}
