//! [`Edge`]: a gateway serving on `127.0.0.1:0` in the background — either the whole
//! application built from TOML ([`Edge::from_toml`], routes and upstreams declared there),
//! or a hand-built route table on the bare edge server ([`Edge::from_table`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use agentgate::server::Running;
use agentgate_config::Config;
use agentgate_proxy::upstream::HealthChecker;
use agentgate_proxy::{
    Balance, EdgeServer, Gateway, RouteTable, ServerSettings, Stop, UpstreamGroup, UpstreamSettings,
};
use tokio::sync::oneshot;

use crate::client::{Client, within};

/// The API key of every test gateway.
pub const KEY: &str = "edge-test-api-key-0123456789";
/// The stream token secret of every test gateway.
pub const SECRET: &str = "edge-test-secret-edge-test-secret-0123";

/// How long a graceful stop may drain.
const GRACE: Duration = Duration::from_secs(2);

/// A configuration: memory store, no dispatch, plus `routes` (TOML for `[[routes]]` and
/// `[upstreams.NAME]` tables); listening on port 0.
pub fn config(routes: &str) -> Config {
    let toml = format!(
        r#"
[auth]
api_keys = ["{KEY}"]
stream_token_secret = "{SECRET}"
[store]
kind = "memory"
[agent]
dispatch = "none"
{routes}
"#
    );
    let mut config = Config::from_toml_str(&toml)
        .unwrap_or_else(|e| panic!("invalid test config {e:?}:\n{toml}"));
    config.server.listen = vec!["127.0.0.1:0".parse().expect("addr")];
    config
}

/// `"a:port", "b:port"` as a TOML array's contents.
pub fn peers(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An upstream group of `peers`, round robin, no health checks, no retry.
pub fn group(name: &str, peers: &[SocketAddr]) -> Arc<UpstreamGroup> {
    Arc::new(
        UpstreamGroup::new(UpstreamSettings {
            name: name.to_owned(),
            peers: peers.to_vec(),
            balance: Balance::RoundRobin,
            connect_timeout: Duration::from_secs(1),
            read_timeout: None,
            idle_timeout: Duration::from_secs(60),
            retry_connect: false,
            health_check: None,
            tls: None,
        })
        .expect("upstream group"),
    )
}

enum Server {
    App(Running),
    Table {
        stop: oneshot::Sender<Stop>,
        thread: std::thread::JoinHandle<std::io::Result<()>>,
    },
}

/// A gateway serving in the background. Dropping it stops it fast.
pub struct Edge {
    /// Where it listens.
    pub addr: SocketAddr,
    /// A client of it.
    pub client: Client,
    server: Server,
}

impl Edge {
    /// The application built from [`config`]`(routes)`, behind the edge server.
    pub async fn from_toml(routes: &str) -> Self {
        let config = config(routes);
        let app = agentgate::app::App::build(&config)
            .await
            .expect("gateway builds");
        let running = Running::start(config.server.listen[0], app, GRACE)
            .await
            .expect("gateway listens");
        Self {
            addr: running.addr,
            client: Client::new(running.addr),
            server: Server::App(running),
        }
    }

    /// The agent API as one route, under `/v2/`.
    pub async fn agent_under_v2() -> Self {
        Self::from_toml(
            r#"
[[routes]]
name = "agent"
kind = "agent"
path_prefix = "/v2/"
"#,
        )
        .await
    }

    /// One upstream route for every path to `origin`, with no read timeout (streams and
    /// slow bodies may go quiet for as long as they like).
    pub async fn proxying_to(origin: SocketAddr) -> Self {
        Self::from_toml(&format!(
            r#"
[[routes]]
name = "all"
kind = "upstream"
upstream = "origin"
[upstreams.origin]
peers = [{}]
read_timeout_ms = 0
"#,
            peers(&[origin])
        ))
        .await
    }

    /// The edge server over a hand-built `table`, running `health` checkers.
    pub fn from_table(table: RouteTable, health: Vec<Arc<dyn HealthChecker>>) -> Self {
        let settings = ServerSettings {
            threads: 2,
            grace: GRACE,
            ..ServerSettings::new(
                vec!["127.0.0.1:0".parse().expect("addr")],
                unique_upgrade_sock(),
            )
        };
        let server = EdgeServer::bind(settings, Gateway::new(table), health).expect("binds");
        let addr = server.local_addrs()[0];
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("edge-test".to_owned())
            .spawn(move || server.run(async move { stopped.await.unwrap_or(Stop::Fast) }))
            .expect("server thread");
        Self {
            addr,
            client: Client::new(addr),
            server: Server::Table { stop, thread },
        }
    }

    /// Where its first TLS listener (`[server.tls] listen` of its TOML) listens.
    pub fn tls_addr(&self) -> SocketAddr {
        match &self.server {
            Server::App(running) => *running
                .tls_addrs
                .first()
                .expect("the configuration has a [server.tls] listener"),
            Server::Table { .. } => panic!("a hand-built route table has no TLS listener"),
        }
    }

    /// Stops gracefully and waits until the server thread is done.
    pub async fn stop(self) {
        match self.server {
            Server::App(running) => within("the gateway to stop", running.stop())
                .await
                .expect("graceful stop"),
            Server::Table { stop, thread } => {
                let _ = stop.send(Stop::Graceful);
                within(
                    "the edge server to stop",
                    tokio::task::spawn_blocking(move || thread.join()),
                )
                .await
                .expect("join task")
                .expect("server thread panicked")
                .expect("server ran");
            }
        }
    }
}

fn unique_upgrade_sock() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "agentgate-edge-test-{}-{n}.upgrade.sock",
        std::process::id()
    ))
}

/// Polls `check` (bounded: at most `rounds` times, `pause` apart) until it returns true;
/// panics with `what` otherwise.
pub async fn eventually<F, Fut>(what: &str, rounds: usize, pause: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..rounds {
        if check().await {
            return;
        }
        tokio::time::sleep(pause).await;
    }
    panic!("gave up after {rounds} polls waiting for {what}");
}
