//! [`Certificates`]: the TLS certificates of the edge listeners, loaded from PEM files,
//! chosen by SNI and replaced while the server runs.
//!
//! - Each certificate is a chain file (end-entity certificate first) and its private key
//!   file (PKCS#8, PKCS#1 or SEC1), checked to belong together when loaded.
//! - A client's SNI name picks the first certificate valid for it (its subject alternative
//!   names, wildcards included, as a client would verify them); a client without SNI, or
//!   with a name no certificate covers, gets the first certificate.
//! - [`Certificates::reload`] loads a new set whole and swaps it in: handshakes after the
//!   swap see the new certificates, connections already open keep theirs (TLS never asks
//!   again mid-connection). A set that fails to load changes nothing.
//! - [`Certificates::tls_settings`] makes pingora listener settings over the set: TLS 1.2
//!   and 1.3 only, ALPN `h2` then `http/1.1` when HTTP/2 is on.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::listeners::TlsAccept;
use pingora::listeners::tls::TlsSettings;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{CertificateDer, ClientHello, PrivateKeyDer, ResolvesServerCert, ServerName};

/// One certificate: a PEM chain file and its PEM private key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    /// The certificate chain, end-entity certificate first.
    pub chain: PathBuf,
    /// The private key of the end-entity certificate.
    pub key: PathBuf,
}

/// Why a certificate set did not load. The message names the file and the problem.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// The certificates the TLS listeners present, swappable while they serve.
pub struct Certificates {
    current: ArcSwap<Vec<Arc<CertifiedKey>>>,
}

impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificates")
            .field("count", &self.current.load().len())
            .finish()
    }
}

impl Certificates {
    /// Loads every certificate of `files` (at least one).
    pub fn load(files: &[CertificateFiles]) -> Result<Self, TlsError> {
        Ok(Self {
            current: ArcSwap::from_pointee(load_all(files)?),
        })
    }

    /// Loads `files` and, if all of them load, presents them from the next handshake on.
    pub fn reload(&self, files: &[CertificateFiles]) -> Result<(), TlsError> {
        self.current.store(Arc::new(load_all(files)?));
        Ok(())
    }

    /// The certificate a client asking for `server_name` gets.
    fn choose(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let set = self.current.load();
        let wanted = server_name.and_then(|name| ServerName::try_from(name).ok());
        wanted
            .and_then(|name| set.iter().find(|key| valid_for(key, &name)))
            .or_else(|| set.first())
            .cloned()
    }

    /// pingora listener settings presenting these certificates; `h2` offers HTTP/2 by ALPN.
    pub fn tls_settings(self: &Arc<Self>, h2: bool) -> pingora::Result<TlsSettings> {
        let mut settings = TlsSettings::with_callbacks(Box::new(NoCallbacks))?;
        settings.set_cert_resolver(Arc::new(Resolver(Arc::clone(self))));
        if h2 {
            settings.enable_h2();
        }
        Ok(settings)
    }
}

fn load_all(files: &[CertificateFiles]) -> Result<Vec<Arc<CertifiedKey>>, TlsError> {
    if files.is_empty() {
        return Err(TlsError("no certificate configured".to_owned()));
    }
    files.iter().map(load_one).collect()
}

fn load_one(files: &CertificateFiles) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = read_pem(&files.chain)?
        .into_iter()
        .filter_map(|item| match item {
            rustls_pemfile::Item::X509Certificate(cert) => Some(cert),
            _ => None,
        })
        .collect::<Vec<CertificateDer<'static>>>();
    if chain.is_empty() {
        return Err(TlsError(format!(
            "{}: no PEM certificate in the chain file",
            files.chain.display()
        )));
    }
    let key = read_pem(&files.key)?
        .into_iter()
        .find_map(|item| match item {
            rustls_pemfile::Item::Pkcs8Key(key) => Some(PrivateKeyDer::from(key)),
            rustls_pemfile::Item::Pkcs1Key(key) => Some(PrivateKeyDer::from(key)),
            rustls_pemfile::Item::Sec1Key(key) => Some(PrivateKeyDer::from(key)),
            _ => None,
        })
        .ok_or_else(|| {
            TlsError(format!(
                "{}: no PEM private key (PKCS#8, PKCS#1 or SEC1)",
                files.key.display()
            ))
        })?;
    if webpki::EndEntityCert::try_from(&chain[0]).is_err() {
        return Err(TlsError(format!(
            "{}: the first certificate does not parse as an X.509 end-entity certificate",
            files.chain.display()
        )));
    }
    pingora::tls::install_default_crypto_provider();
    let provider = pingora::tls::CryptoProvider::get_default()
        .ok_or_else(|| TlsError("no TLS crypto provider installed".to_owned()))?;
    CertifiedKey::from_der(chain, key, provider)
        .map(Arc::new)
        .map_err(|e| {
            TlsError(format!(
                "{} with {}: {e}",
                files.chain.display(),
                files.key.display()
            ))
        })
}

fn read_pem(path: &Path) -> Result<Vec<rustls_pemfile::Item>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| TlsError(format!("{}: {e}", path.display())))?;
    rustls_pemfile::read_all(&mut bytes.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("{}: not PEM: {e}", path.display())))
}

/// Whether `key`'s end-entity certificate covers `name` (checked as a client would).
fn valid_for(key: &CertifiedKey, name: &ServerName<'_>) -> bool {
    key.cert.first().is_some_and(|der| {
        webpki::EndEntityCert::try_from(der)
            .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(name).is_ok())
    })
}

/// rustls's certificate choice, per handshake, over the current set.
#[derive(Debug)]
struct Resolver(Arc<Certificates>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.choose(hello.server_name())
    }
}

/// pingora needs callbacks to build settings without certificate files; none are used.
struct NoCallbacks;

#[async_trait::async_trait]
impl TlsAccept for NoCallbacks {}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_cert(dir: &Path, name: &str, sans: &[&str]) -> CertificateFiles {
        let key = rcgen::KeyPair::generate().expect("key");
        let params =
            rcgen::CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .expect("params");
        let cert = params.self_signed(&key).expect("cert");
        let files = CertificateFiles {
            chain: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.chain, cert.pem()).expect("write chain");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        files
    }

    fn sans(key: &CertifiedKey) -> Vec<u8> {
        key.cert[0].as_ref().to_vec()
    }

    #[test]
    fn sni_picks_the_certificate_that_covers_the_name_else_the_first() {
        let dir = tempfile::tempdir().expect("dir");
        let a = write_cert(dir.path(), "a", &["a.example"]);
        let b = write_cert(dir.path(), "b", &["*.b.example"]);
        let certs = Certificates::load(&[a, b]).expect("load");
        let set = certs.current.load_full();
        let chosen = |name| sans(&certs.choose(name).expect("a certificate"));
        assert_eq!(chosen(Some("a.example")), sans(&set[0]));
        assert_eq!(chosen(Some("x.b.example")), sans(&set[1]));
        assert_eq!(chosen(Some("other.example")), sans(&set[0]));
        assert_eq!(chosen(None), sans(&set[0]));
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_and_a_failed_reload_changes_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let a = write_cert(dir.path(), "a", &["a.example"]);
        let b = write_cert(dir.path(), "b", &["b.example"]);
        let mixed = CertificateFiles {
            chain: a.chain.clone(),
            key: b.key.clone(),
        };
        let err = Certificates::load(std::slice::from_ref(&mixed)).expect_err("mismatch");
        assert!(err.to_string().contains("a.pem"), "{err}");
        let certs = Certificates::load(std::slice::from_ref(&a)).expect("load");
        let before = sans(&certs.choose(None).expect("cert"));
        assert!(certs.reload(&[mixed]).is_err());
        assert_eq!(sans(&certs.choose(None).expect("cert")), before);
        let missing = CertificateFiles {
            chain: dir.path().join("nope.pem"),
            key: a.key.clone(),
        };
        let err = Certificates::load(&[missing]).expect_err("missing");
        assert!(err.to_string().contains("nope.pem"), "{err}");
        certs.reload(&[b]).expect("reload");
        assert_ne!(sans(&certs.choose(None).expect("cert")), before);
    }
}
