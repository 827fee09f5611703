//! `[upstreams.NAME.tls]`: peers reached over TLS, their certificates verified against the
//! configured server name and CA file, health checks over TLS with the same verification,
//! and an `sse` route streaming from a TLS origin. The test makes its own CA and
//! certificates (rcgen); the origins are [`Origin::serve_tls`] servers that record every
//! ClientHello, so the tests see the SNI and ALPN the gateway sends.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentgate_proxy::{Balance, HealthCheck, UpstreamGroup, UpstreamSettings, UpstreamTls};
use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{ServerConfig, version};

use crate::client::within;
use crate::edge::{Edge, eventually, peers};
use crate::origin::{Origin, text, two_part_stream};

/// The name the gateway expects its TLS peers to prove.
const NAME: &str = "origin.test";

/// A test certificate authority, its certificate written to `ca.pem` in a temporary
/// directory.
struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
    ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Authority {
    fn new(label: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("agentgate test CA {label}"),
        );
        let key = KeyPair::generate().expect("CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        let dir = tempfile::tempdir().expect("temporary directory");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, issuer.pem()).expect("write ca.pem");
        Self {
            issuer,
            ca_file,
            _dir: dir,
        }
    }

    /// A server certificate for `name`, signed by this authority.
    fn certified(&self, name: &str) -> CertifiedKey {
        let key = KeyPair::generate().expect("server key");
        let cert = CertificateParams::new(vec![name.to_owned()])
            .expect("server params")
            .signed_by(&key, &self.issuer)
            .expect("server certificate");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        CertifiedKey::from_der(vec![cert.der().clone()], key, &ring::default_provider())
            .expect("certified key")
    }
}

/// One ClientHello as a TLS origin received it.
#[derive(Debug, Clone, PartialEq)]
struct Hello {
    sni: Option<String>,
    alpn: Vec<Vec<u8>>,
}

/// Serves one certificate whatever the SNI, recording every ClientHello.
#[derive(Debug)]
struct OneCertificate {
    key: Arc<CertifiedKey>,
    hellos: Arc<Mutex<Vec<Hello>>>,
}

impl ResolvesServerCert for OneCertificate {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let seen = Hello {
            sni: hello.server_name().map(str::to_owned),
            alpn: hello
                .alpn()
                .map(|protocols| protocols.map(<[u8]>::to_vec).collect())
                .unwrap_or_default(),
        };
        self.hellos
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(seen);
        Some(Arc::clone(&self.key))
    }
}

/// A TLS origin presenting `certified`, and the ClientHellos it receives.
struct TlsOrigin {
    origin: Origin,
    hellos: Arc<Mutex<Vec<Hello>>>,
}

impl TlsOrigin {
    /// Answers `200` with `body`.
    async fn start(certified: CertifiedKey, body: &'static str) -> Self {
        Self::with_handler(certified, move |_req| {
            Box::pin(async move { text(StatusCode::OK, Bytes::from_static(body.as_bytes())) })
        })
        .await
    }

    async fn with_handler(
        certified: CertifiedKey,
        handler: impl Fn(http::Request<hyper::body::Incoming>) -> crate::origin::Reply
        + Send
        + Sync
        + 'static,
    ) -> Self {
        let hellos = Arc::new(Mutex::new(Vec::new()));
        let resolver = OneCertificate {
            key: Arc::new(certified),
            hellos: Arc::clone(&hellos),
        };
        let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_protocol_versions(&[&version::TLS12, &version::TLS13])
            .expect("TLS versions")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("origin binds");
        let origin = Origin::serve_tls(listener, TlsAcceptor::from(Arc::new(config)), handler);
        Self { origin, hellos }
    }

    fn addr(&self) -> SocketAddr {
        self.origin.addr
    }

    fn hellos(&self) -> Vec<Hello> {
        self.hellos
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The hello of the gateway's client side: SNI [`NAME`], ALPN `http/1.1` only.
fn expected_hello() -> Hello {
    Hello {
        sni: Some(NAME.to_owned()),
        alpn: vec![b"http/1.1".to_vec()],
    }
}

/// `[upstreams.NAME]` (with its `tls` table) reaching `peer`.
fn tls_upstream(name: &str, peer: SocketAddr, ca_file: &std::path::Path) -> String {
    format!(
        r#"
[upstreams.{name}]
peers = [{}]
retry_connect = false
read_timeout_ms = 0
[upstreams.{name}.tls]
server_name = "{NAME}"
ca_file = {:?}
"#,
        peers(&[peer]),
        ca_file.display().to_string(),
    )
}

#[tokio::test]
async fn requests_reach_a_peer_over_tls_and_a_wrong_certificate_is_refused() {
    let ca = Authority::new("trusted");
    let stranger = Authority::new("untrusted");
    let good = TlsOrigin::start(ca.certified(NAME), "over tls").await;
    let wrong_name = TlsOrigin::start(ca.certified("other.test"), "wrong name").await;
    let untrusted = TlsOrigin::start(stranger.certified(NAME), "untrusted").await;
    let edge = Edge::from_toml(&format!(
        r#"
[[routes]]
name = "good"
kind = "upstream"
path_prefix = "/good/"
upstream = "good"
[[routes]]
name = "wrong-name"
kind = "upstream"
path_prefix = "/wrong-name/"
upstream = "wrong-name"
[[routes]]
name = "untrusted"
kind = "upstream"
path_prefix = "/untrusted/"
upstream = "untrusted"
{}{}{}"#,
        tls_upstream("good", good.addr(), &ca.ca_file),
        tls_upstream("wrong-name", wrong_name.addr(), &ca.ca_file),
        tls_upstream("untrusted", untrusted.addr(), &ca.ca_file),
    ))
    .await;

    let reply = edge.client.send_call(edge.client.get("/good/hello")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.text, "over tls");
    let seen = good.origin.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, "/good/hello");
    // The client spoke cleartext to the gateway; TLS to the peer does not change that.
    assert_eq!(seen[0].header("x-forwarded-proto"), Some("http"));
    assert_eq!(good.hellos(), [expected_hello()]);

    // A second request reuses the pooled TLS connection.
    let reply = edge.client.send_call(edge.client.get("/good/again")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(good.hellos().len(), 1, "one handshake for two requests");

    for (path, origin) in [("/wrong-name/x", &wrong_name), ("/untrusted/x", &untrusted)] {
        let reply = edge.client.send_call(edge.client.get(path)).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_GATEWAY,
            "{path}: {}",
            reply.text
        );
        assert_eq!(reply.error_code(), "bad_gateway", "{path}: {}", reply.text);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        // The handshake happened, with the configured name; no request followed it.
        assert_eq!(origin.hellos(), [expected_hello()], "{path}");
        assert_eq!(
            origin.origin.requests(),
            0,
            "{path}: the peer never answered"
        );
    }
    edge.stop().await;
}

/// The group's pooled client (the one the gateway's `http` tools use, with `http://` URIs)
/// speaks TLS because the group says so, whatever the URI's scheme.
#[tokio::test]
async fn the_group_client_uses_tls_whatever_the_uri_scheme() {
    let ca = Authority::new("trusted");
    let origin = TlsOrigin::start(ca.certified(NAME), "tool answer").await;
    let group = UpstreamGroup::new(settings(vec![origin.addr()], &ca, None)).expect("group");
    let client = agentgate_proxy::client::pooled_client(&group);
    for scheme in ["http", "https"] {
        let request = http::Request::post(format!("{scheme}://{}/tool", origin.addr()))
            .body(http_body_util::Full::new(Bytes::from_static(b"{}")))
            .expect("request");
        let response = within("the tool call", client.request(request))
            .await
            .unwrap_or_else(|e| panic!("{scheme}: {e:?}"));
        assert_eq!(response.status(), StatusCode::OK, "{scheme}");
        let body = response.into_body().collect().await.expect("body");
        assert_eq!(&body.to_bytes()[..], b"tool answer");
    }
    assert!(
        origin.hellos().iter().all(|h| *h == expected_hello()),
        "{:?}",
        origin.hellos()
    );
}

/// Settings of a TLS group of `peers` trusting `ca`, round robin, no retry.
fn settings(
    peers: Vec<SocketAddr>,
    ca: &Authority,
    health_check: Option<HealthCheck>,
) -> UpstreamSettings {
    UpstreamSettings {
        name: "pool".to_owned(),
        peers,
        balance: Balance::RoundRobin,
        connect_timeout: Duration::from_secs(1),
        read_timeout: None,
        idle_timeout: Duration::from_secs(60),
        retry_connect: false,
        health_check,
        tls: Some(UpstreamTls {
            server_name: NAME.to_owned(),
            ca_file: Some(ca.ca_file.clone()),
        }),
    }
}

#[tokio::test]
async fn health_checks_run_over_tls_with_the_same_verification() {
    let ca = Authority::new("trusted");
    let stranger = Authority::new("untrusted");
    let good = TlsOrigin::start(ca.certified(NAME), "good").await;
    let untrusted = TlsOrigin::start(stranger.certified(NAME), "untrusted").await;
    // Failing its check at first: only a check that gets through TLS can bring it back.
    good.origin.set_healthy(false);
    let check = HealthCheck {
        path: "/healthz".to_owned(),
        interval: Duration::from_millis(100),
        timeout: Duration::from_secs(1),
        healthy_threshold: 1,
        unhealthy_threshold: 1,
        expect_status: 200,
    };
    let peers = vec![good.addr(), untrusted.addr()];
    let group = UpstreamGroup::new(settings(peers, &ca, Some(check))).expect("group builds");
    let checker = group.health_checker().expect("health checks");
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let checks = tokio::spawn(async move { checker.run(shutdown).await });

    // The untrusted peer answers 200 to anyone who accepts its certificate: it is down
    // only because its certificate is refused.
    eventually(
        "both peers to be down",
        200,
        Duration::from_millis(50),
        || async { group.peer_health() == (0, 2) },
    )
    .await;
    good.origin.set_healthy(true);
    eventually(
        "the good peer to be back",
        200,
        Duration::from_millis(50),
        || async { group.peer_health() == (1, 2) },
    )
    .await;
    assert_eq!(group.select_by_key(b"", None), Some(good.addr()));
    // Checks send the configured name too.
    for origin in [&good, &untrusted] {
        let hellos = origin.hellos();
        assert!(!hellos.is_empty());
        assert!(
            hellos.iter().all(|h| h.sni.as_deref() == Some(NAME)),
            "{hellos:?}"
        );
    }
    let _ = stop.send(true);
    checks.await.expect("health checks stop");
}

#[tokio::test]
async fn an_sse_route_streams_from_a_tls_origin() {
    let ca = Authority::new("trusted");
    // Event 2 is sent only once the test has read event 1: a buffering proxy deadlocks.
    let read_first = Arc::new(tokio::sync::Notify::new());
    let origin = TlsOrigin::with_handler(
        ca.certified(NAME),
        two_part_stream("tick", Arc::clone(&read_first)),
    )
    .await;
    let edge = Edge::from_toml(&format!(
        r#"
[[routes]]
name = "feeds"
kind = "sse"
path_prefix = "/feeds/"
upstream = "news"
{}"#,
        tls_upstream("news", origin.addr(), &ca.ca_file)
    ))
    .await;

    let mut stream = edge
        .client
        .stream(edge.client.get("/feeds/world"))
        .await
        .unwrap_or_else(|r| panic!("stream refused: {} {}", r.status, r.text));
    let first = stream.next_event().await.expect("event 1");
    assert_eq!(first.data.as_deref(), Some("1"));
    read_first.notify_one();
    let second = stream.next_event().await.expect("event 2");
    assert_eq!(second.data.as_deref(), Some("2"));
    stream.expect_end().await;
    drop(stream);
    assert_eq!(origin.hellos(), [expected_hello()]);
    edge.stop().await;
}
