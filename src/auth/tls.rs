//! TLS for both listeners of `seglog serve` (`--tls-cert`, `--tls-key`):
//! the certificate chain and private key, read from PEM files at start,
//! as a rustls server config with the aws-lc-rs provider, and the server's
//! side of a handshake, bounded in time.
//!
//! TLS 1.2 and 1.3, rustls' default cipher suites; no client certificates
//! (clients authenticate with SASL or HTTP basic auth).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Longest a client may take to finish its TLS handshake: a few round
/// trips take milliseconds; a client that sends nothing must not hold a
/// connection slot for long.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest certificate or key file read: a chain of a few certificates is
/// a few kilobytes; this bounds what a wrong path makes us read.
pub const PEM_FILE_BYTES_MAX: u64 = 1 << 20;

/// The server's TLS: one acceptor per listener, from one certificate.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
}

impl Tls {
    /// Reads the certificate chain and key (PEM) and builds the config;
    /// `alpn` names the application protocols offered (HTTP's "http/1.1";
    /// none for Kafka, whose clients send none).
    pub fn load(cert: &Path, key: &Path, alpn: &[&[u8]]) -> Result<Tls, String> {
        let cert_pem = read_pem(cert, "--tls-cert")?;
        let key_pem = read_pem(key, "--tls-key")?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("--tls-cert {}: not a PEM certificate: {e}", cert.display()))?;
        if chain.is_empty() {
            return Err(format!(
                "--tls-cert {}: no certificate in it (a PEM file with a 'BEGIN CERTIFICATE' block)",
                cert.display()
            ));
        }
        let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            format!(
                "--tls-key {}: no PEM private key in it (PKCS#8, PKCS#1 or SEC1): {e}",
                key.display()
            )
        })?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(|e| {
                format!(
                    "--tls-cert {} and --tls-key {} do not make a server certificate: {e}",
                    cert.display(),
                    key.display()
                )
            })?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// The server's side of a handshake on `tcp`, within
    /// [`HANDSHAKE_TIMEOUT`]; the error says why it failed.
    pub async fn accept(&self, tcp: TcpStream) -> Result<TlsStream<TcpStream>, String> {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
            Err(_) => Err(format!(
                "TLS handshake not finished within {} s",
                HANDSHAKE_TIMEOUT.as_secs()
            )),
        }
    }
}

fn read_pem(path: &Path, flag: &str) -> Result<Vec<u8>, String> {
    super::read_at_most(path, PEM_FILE_BYTES_MAX)
        .map_err(|e| format!("{flag} {}: cannot read: {e}", path.display()))?
        .ok_or_else(|| {
            format!(
                "{flag} {}: over {PEM_FILE_BYTES_MAX} bytes, not a PEM file",
                path.display()
            )
        })
}
