//! The TLS client of the benchmark programs (`sse_load --tls-ca`, `tls_handshakes`), shared
//! by `#[path]` so both build their connections alike: rustls with the same crypto provider
//! pingora uses (ring), the server's certificate verified against a CA file, TLS 1.2 and
//! 1.3, chosen ALPN protocols, and session resumption optional (off: every connection pays
//! a full handshake, as a new visitor does).

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::client::Resumption;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// A connector and the name it asks for (SNI, and the name the certificate must cover).
#[derive(Clone)]
pub struct TlsClient {
    /// Wraps a TCP stream in a client TLS session.
    pub connector: TlsConnector,
    /// The server name sent as SNI and verified against the certificate.
    pub server_name: ServerName<'static>,
}

impl TlsClient {
    /// Trusts the certificates in the PEM file `ca`, offers `alpn` in that order, and keeps
    /// sessions for resumption only when `resume`.
    pub fn new(ca: &Path, server_name: &str, alpn: &[&str], resume: bool) -> Result<Self, String> {
        let mut roots = RootCertStore::empty();
        let certs =
            CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", ca.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("{}: no PEM certificate", ca.display()));
        }
        let mut config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        if !resume {
            config.resumption = Resumption::disabled();
        }
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| format!("server name {server_name:?}: {e}"))?;
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }
}
