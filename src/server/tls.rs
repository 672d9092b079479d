//! TLS with rustls: certificate loading, the server configuration, and the handshake.
//!
//! TLS 1.3 and TLS 1.2 only, with rustls' (ring) cipher suites — all AEAD with forward secrecy;
//! nothing older or weaker is offered. ALPN offers `h2` then `http/1.1`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::http::TlsInfo;

/// Why TLS could not be set up, with the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read.
    #[error("TLS_CERT={}: {source}", path.display())]
    ReadCertificate {
        /// `TLS_CERT`.
        path: PathBuf,
        /// What went wrong.
        source: rustls_pki_types::pem::Error,
    },
    /// The certificate file holds something that is not PEM.
    #[error("TLS_CERT={}: not valid PEM: {source}", path.display())]
    InvalidPem {
        /// `TLS_CERT`.
        path: PathBuf,
        /// What went wrong.
        source: rustls_pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("TLS_CERT={}: no PEM certificate in the file", path.display())]
    NoCertificate {
        /// `TLS_CERT`.
        path: PathBuf,
    },
    /// The key file holds no key rustls can use.
    #[error("TLS_KEY={}: no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {source}", path.display())]
    NoKey {
        /// `TLS_KEY`.
        path: PathBuf,
        /// What went wrong.
        source: rustls_pki_types::pem::Error,
    },
    /// rustls refused the protocol versions (a build without TLS 1.2/1.3).
    #[error("TLS setup: {0}")]
    Setup(rustls::Error),
    /// The key is not the certificate's.
    #[error("TLS_KEY={} does not fit TLS_CERT={}: {source}", key.display(), cert.display())]
    KeyMismatch {
        /// `TLS_CERT`.
        cert: PathBuf,
        /// `TLS_KEY`.
        key: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
}

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
            .map_err(TlsError::Setup)?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)
            .map_err(|source| TlsError::KeyMismatch {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                source,
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
    let path_buf = || path.to_path_buf();
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|source| TlsError::ReadCertificate {
            path: path_buf(),
            source,
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::InvalidPem {
            path: path_buf(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: path_buf() });
    }
    Ok(chain)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::NoKey {
        path: path.to_path_buf(),
        source,
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
