//! TLS to upstream peers: [`UpstreamTls`] (a group's settings) and [`PeerConnector`], the
//! connector of the group's pooled client ([`pooled_client`](crate::client::pooled_client)).
//!
//! Peers are `IP:port`, so the name a peer must prove is configured, not taken from the
//! request URI: it is sent as SNI and every peer's certificate is verified against it
//! (rustls with pingora's `ring` provider; TLS 1.2 and 1.3) and against the group's CA
//! file or, without one, the system's roots. ALPN offers `http/1.1` only. Whether a
//! connection is TLS is the group's setting, not the URI scheme's, so every caller of the
//! group's client (the proxy, the gateway's HTTP tools) gets it. The group's health checks
//! use the same name and roots ([`UpstreamGroup`](crate::UpstreamGroup)).

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use pingora::tls::{
    ClientConfig, ClientTlsStream, RootCertStore, ServerName, TlsConnector,
    install_default_crypto_provider, load_ca_file_into_store,
    load_platform_certs_incl_env_into_store,
};
use pingora_timeout::fast_timeout::fast_timeout;
use tokio::net::TcpStream;
use tower::BoxError;

/// The TLS settings of an upstream group (`[upstreams.NAME.tls]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// Sent as SNI; every peer's certificate must be valid for it (a DNS name or an IP
    /// address).
    pub server_name: String,
    /// PEM file of the CA certificates peers' certificates must chain to; `None`: the
    /// system's roots (`SSL_CERT_FILE` and `SSL_CERT_DIR` honoured).
    pub ca_file: Option<PathBuf>,
}

/// A group's TLS client side, built once per group: the rustls configuration and the name.
pub(crate) struct PeerTls {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl PeerTls {
    /// Loads the roots and checks the name. Fails with a message naming what is wrong.
    pub(crate) fn new(tls: &UpstreamTls) -> io::Result<Self> {
        let name = ServerName::try_from(tls.server_name.clone()).map_err(|_| {
            io::Error::other(format!(
                "tls.server_name {:?} is not a DNS name or an IP address",
                tls.server_name
            ))
        })?;
        let mut roots = RootCertStore::empty();
        match &tls.ca_file {
            Some(path) => load_ca_file_into_store(path, &mut roots)
                .map_err(|e| io::Error::other(format!("tls.ca_file {}: {e}", path.display())))?,
            None => load_platform_certs_incl_env_into_store(&mut roots)
                .map_err(|e| io::Error::other(format!("the system's CA certificates: {e}")))?,
        }
        if roots.is_empty() {
            return Err(io::Error::other(match &tls.ca_file {
                Some(path) => format!("tls.ca_file {} holds no certificate", path.display()),
                None => "no system CA certificates found; set tls.ca_file".to_owned(),
            }));
        }
        // rustls needs a process-wide provider: pingora's `ring` (a no-op once installed).
        install_default_crypto_provider();
        let mut config = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            name,
        })
    }
}

/// Connects to a group's peers: TCP (`TCP_NODELAY`, within the connect timeout), then, when
/// the group has TLS, the TLS handshake, within the connect timeout again. Any failure is a
/// connect error to the client (so `retry_connect` applies: no request was sent).
#[derive(Clone)]
pub struct PeerConnector {
    http: HttpConnector,
    tls: Option<Arc<PeerTls>>,
    timeout: Duration,
}

impl PeerConnector {
    pub(crate) fn new(connect_timeout: Duration, tls: Option<Arc<PeerTls>>) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        // TLS is the group's choice, so an `https` URI is fine too.
        http.enforce_http(false);
        Self {
            http,
            tls,
            timeout: connect_timeout,
        }
    }
}

impl tower::Service<Uri> for PeerConnector {
    type Response = PeerStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<PeerStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(BoxError::from)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tcp = self.http.call(uri);
        let Some(tls) = self.tls.clone() else {
            return Box::pin(async move { Ok(PeerStream::Plain(tcp.await?)) });
        };
        let timeout = self.timeout;
        Box::pin(async move {
            let tcp = tcp.await?.into_inner();
            let handshake = tls.connector.connect(tls.name.clone(), tcp);
            match fast_timeout(timeout, handshake).await {
                Ok(stream) => Ok(PeerStream::Tls(Box::new(TokioIo::new(stream?)))),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("TLS handshake not done within {timeout:?}"),
                )
                .into()),
            }
        })
    }
}

/// A connection to a peer, cleartext or TLS.
pub enum PeerStream {
    /// Cleartext.
    Plain(TokioIo<TcpStream>),
    /// TLS over TCP (boxed: rustls's state is a kilobyte, a cleartext stream 40 bytes).
    Tls(Box<TokioIo<ClientTlsStream<TcpStream>>>),
}

impl Connection for PeerStream {
    fn connected(&self) -> Connected {
        match self {
            Self::Plain(tcp) => tcp.connected(),
            Self::Tls(tls) => tls.inner().get_ref().0.connected(),
        }
    }
}

impl Read for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl Write for PeerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}
