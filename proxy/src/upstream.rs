//! Upstream groups: load-balanced, health-checked peers that upstream routes proxy to.
//!
//! Balancing is pingora-load-balancing's: round robin, or consistent (Ketama) hashing on a
//! key taken from the request — its [`Affinity`] (agentgate: the session id) or a header —
//! so one session's requests keep going to the same peer while it is healthy. Active HTTP
//! health checks eject a peer after `unhealthy_threshold` failed probes and re-admit it after
//! `healthy_threshold` good ones; the server runs them ([`UpstreamGroup::health_checker`]).
//! A group with [TLS](UpstreamTls) checks over TLS too, with the same server name (as SNI
//! and `Host`) and the same roots as its requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pingora::connectors::ConnectorOptions;
use pingora::connectors::http::Connector as CheckConnector;
use pingora::http::RequestHeader;
use pingora::lb::health_check::HttpHealthCheck;
use pingora::lb::selection::{Consistent, RoundRobin};
use pingora::lb::{Backend, LoadBalancer};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::peer_tls::{PeerTls, UpstreamTls};

/// Most peers tried when selecting one (bounds the walk of a hash ring).
const MAX_SELECT_ITERATIONS: usize = 256;

/// How peers are chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    /// Each request to the next healthy peer.
    RoundRobin,
    /// Consistent hashing on a request key.
    ConsistentHash(HashKey),
}

/// What keeps a client's requests together: on one peer of a consistent-hash group
/// ([`HashKey::Affinity`]) and on one side of a [canary](crate::Canary). The application puts
/// it in the request's extensions before the upstream service (agentgate: the session id,
/// from the path or `x-session-id`); this crate never parses it out of a request itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Affinity(pub Bytes);

/// The request key consistent hashing uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The request's [`Affinity`] extension (none: the empty key).
    Affinity,
    /// A request header (lower-case name).
    Header(String),
}

/// Active health checking of a group's peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Path probed with `GET`.
    pub path: String,
    /// Time between probe rounds.
    pub interval: Duration,
    /// Connect and read timeout of one probe.
    pub timeout: Duration,
    /// Consecutive good probes that re-admit a peer.
    pub healthy_threshold: usize,
    /// Consecutive failed probes that eject a peer.
    pub unhealthy_threshold: usize,
    /// Status a healthy peer answers.
    pub expect_status: u16,
}

/// Settings of one upstream group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSettings {
    /// Name, for logs.
    pub name: String,
    /// Peer addresses.
    pub peers: Vec<SocketAddr>,
    /// How peers are chosen.
    pub balance: Balance,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Longest gap between reads from the peer; `None` for no limit (SSE).
    pub read_timeout: Option<Duration>,
    /// How long a pooled keep-alive connection may stay idle.
    pub idle_timeout: Duration,
    /// On connect failure, retry once on another peer.
    pub retry_connect: bool,
    /// Active health checks, if any.
    pub health_check: Option<HealthCheck>,
    /// TLS to the peers (health checks included); `None`: cleartext.
    pub tls: Option<UpstreamTls>,
}

enum Balancer {
    RoundRobin(Arc<LoadBalancer<RoundRobin>>),
    Consistent(Arc<LoadBalancer<Consistent>>),
}

/// A group of peers with its balancer.
pub struct UpstreamGroup {
    settings: UpstreamSettings,
    balancer: Balancer,
    health: Option<Arc<dyn HealthChecker>>,
    /// The loaded [`UpstreamTls`], shared by every client of the group.
    tls: Option<Arc<PeerTls>>,
}

/// Runs a group's active health checks until shutdown.
#[async_trait::async_trait]
pub trait HealthChecker: Send + Sync {
    /// Probes peers on schedule until `shutdown` turns true.
    async fn run(&self, shutdown: ShutdownWatch);
}

#[async_trait::async_trait]
impl<S> HealthChecker for LoadBalancer<S>
where
    S: pingora::lb::selection::BackendSelection + Send + Sync + 'static,
    S::Iter: pingora::lb::selection::BackendIter,
{
    async fn run(&self, shutdown: ShutdownWatch) {
        BackgroundService::start(self, shutdown).await;
    }
}

impl std::fmt::Debug for UpstreamGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamGroup")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl UpstreamGroup {
    /// Builds the group. Fails if pingora rejects a peer address, or the TLS settings do
    /// not load (a CA file that cannot be read or holds no valid certificate, no system
    /// roots); the error says which.
    pub fn new(settings: UpstreamSettings) -> std::io::Result<Self> {
        // TLS first: pingora's health-check connector panics on a CA file it cannot load.
        let tls = settings
            .tls
            .as_ref()
            .map(|tls| PeerTls::new(tls).map(Arc::new))
            .transpose()?;
        let addrs: Vec<String> = settings.peers.iter().map(ToString::to_string).collect();
        let (balancer, health) = match settings.balance {
            Balance::RoundRobin => {
                let (lb, health) = build::<RoundRobin>(&settings, &addrs)?;
                (Balancer::RoundRobin(lb), health)
            }
            Balance::ConsistentHash(_) => {
                let (lb, health) = build::<Consistent>(&settings, &addrs)?;
                (Balancer::Consistent(lb), health)
            }
        };
        Ok(Self {
            settings,
            balancer,
            health,
            tls,
        })
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// The group's settings.
    pub fn settings(&self) -> &UpstreamSettings {
        &self.settings
    }

    /// The group's loaded TLS settings, for its clients' connector.
    pub(crate) fn peer_tls(&self) -> Option<&Arc<PeerTls>> {
        self.tls.as_ref()
    }

    /// Peers healthy now, and peers in all (without health checks every peer is healthy).
    pub fn peer_health(&self) -> (usize, usize) {
        let backends = match &self.balancer {
            Balancer::RoundRobin(lb) => lb.backends(),
            Balancer::Consistent(lb) => lb.backends(),
        };
        let all = backends.get_backend();
        let healthy = all.iter().filter(|b| backends.ready(b)).count();
        (healthy, all.len())
    }

    /// The group's health checker, to run in the server. `None` without checks.
    pub fn health_checker(&self) -> Option<Arc<dyn HealthChecker>> {
        self.health.clone()
    }

    /// A healthy peer for the request, avoiding `avoid` (a peer that just failed to connect)
    /// when another healthy one exists.
    pub fn select(
        &self,
        req: &http::request::Parts,
        avoid: Option<SocketAddr>,
    ) -> Option<SocketAddr> {
        self.select_by_key(self.hash_key(req), avoid)
    }

    /// A healthy peer for an explicit balancing `key` (ignored by round robin), avoiding
    /// `avoid` when another healthy one exists. For callers that are not proxying a request,
    /// such as the gateway's own HTTP tools.
    pub fn select_by_key(&self, key: &[u8], avoid: Option<SocketAddr>) -> Option<SocketAddr> {
        let accept = |b: &Backend, healthy: bool| healthy && b.addr.as_inet().copied() != avoid;
        let chosen = match &self.balancer {
            Balancer::RoundRobin(lb) => lb
                .select_with(key, MAX_SELECT_ITERATIONS, accept)
                .or_else(|| lb.select(key, MAX_SELECT_ITERATIONS)),
            Balancer::Consistent(lb) => lb
                .select_with(key, MAX_SELECT_ITERATIONS, accept)
                .or_else(|| lb.select(key, MAX_SELECT_ITERATIONS)),
        };
        chosen.and_then(|b| b.addr.as_inet().copied())
    }

    fn hash_key<'r>(&self, req: &'r http::request::Parts) -> &'r [u8] {
        match &self.settings.balance {
            Balance::RoundRobin => b"",
            Balance::ConsistentHash(HashKey::Header(name)) => req
                .headers
                .get(name.as_str())
                .map_or(&b""[..], |v| v.as_bytes()),
            Balance::ConsistentHash(HashKey::Affinity) => req
                .extensions
                .get::<Affinity>()
                .map_or(&b""[..], |Affinity(key)| key),
        }
    }
}

type Built<S> = (Arc<LoadBalancer<S>>, Option<Arc<dyn HealthChecker>>);

fn build<S>(settings: &UpstreamSettings, addrs: &[String]) -> std::io::Result<Built<S>>
where
    S: pingora::lb::selection::BackendSelection + Send + Sync + 'static,
    S::Iter: pingora::lb::selection::BackendIter,
{
    let mut lb = LoadBalancer::<S>::try_from_iter(addrs)?;
    let Some(hc) = &settings.health_check else {
        return Ok((Arc::new(lb), None));
    };
    let mut check = match &settings.tls {
        None => HttpHealthCheck::new("localhost", false),
        Some(tls) => tls_check(tls)?,
    };
    check.consecutive_success = hc.healthy_threshold;
    check.consecutive_failure = hc.unhealthy_threshold;
    check.peer_template.options.connection_timeout = Some(hc.timeout);
    check.peer_template.options.read_timeout = Some(hc.timeout);
    check.req = RequestHeader::build("GET", hc.path.as_bytes(), None)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let host = settings
        .tls
        .as_ref()
        .map_or("localhost", |tls| tls.server_name.as_str());
    check
        .req
        .insert_header("host", host)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let expect = hc.expect_status;
    check.validator = Some(Box::new(move |resp| {
        if resp.status.as_u16() == expect {
            Ok(())
        } else {
            pingora::Error::e_explain(
                pingora::ErrorType::InternalError,
                "unexpected health status",
            )
        }
    }));
    lb.set_health_check(Box::new(check));
    lb.health_check_frequency = Some(hc.interval);
    lb.parallel_health_check = true;
    let lb = Arc::new(lb);
    Ok((lb.clone(), Some(lb)))
}

/// A health check over TLS: SNI and verification against `tls.server_name`, roots from
/// `tls.ca_file` (pingora's loader, the one [`PeerTls`] uses) or the system's, ALPN
/// `http/1.1`. Every check makes a fresh handshake, so a peer's certificate is checked
/// every time.
fn tls_check(tls: &UpstreamTls) -> std::io::Result<HttpHealthCheck> {
    let mut check = HttpHealthCheck::new(&tls.server_name, true);
    if let Some(path) = &tls.ca_file {
        let path = path.to_str().ok_or_else(|| {
            std::io::Error::other(format!(
                "tls.ca_file {}: the path must be UTF-8",
                path.display()
            ))
        })?;
        // Checks do not reuse connections: the pool is never used.
        let mut options = ConnectorOptions::new(1);
        options.ca_file = Some(path.to_owned());
        check.set_connector(CheckConnector::new(Some(options)));
    }
    Ok(check)
}
