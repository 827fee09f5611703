//! The one place where configuration becomes stores, handlers, layer stacks and routes.
//!
//! [`App::build`] reads a validated [`Config`] and wires, in order: the session store (memory
//! or Redis), auth, metrics, the agent dispatcher, the upstream groups, the tool executor
//! (configured and Rust-registered tools, the CPU worker pool), the [`AgentApi`] service and
//! the route table. [`App::edge_server`] puts it all behind the pingora edge proxy.
//!
//! Each route kind's stack is composed in [`crate::stack`], one chain per kind; this
//! module only builds the parts the configuration asks for (the policies, the agent
//! layers, the upstream clients).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use agentgate_config::{
    Balance as BalanceConfig, CanaryConfig, Config, Dispatch as DispatchKind, DurableAccess,
    HashOn, RouteConfig, RouteKind, SseShare, StoreKind, TlsConfig, ToolKind, UpstreamConfig,
};
use agentgate_middleware::existence_cache::{Cache, ExistenceCacheLayer};
use agentgate_middleware::priority_queue::{PriorityQueueLayer, StreamRule};
use agentgate_middleware::rate_limit::{KeyKind, LimitStore, RateLimitLayer, SharedGcra};
use agentgate_middleware::sse::fanout::{PathAndCredentials, Share, SseFanoutLayer};
use agentgate_middleware::sse::multiplex::SseMultiplexLayer;
use agentgate_proxy::{
    Balance, Canary, CertificateFiles, Certificates, ConnectionLimits, EdgeServer, Gateway,
    HashKey, HealthCheck, LiveRoutes, Route, RouteService, RouteTable, ServerSettings, TlsError,
    UpstreamClient, UpstreamGroup, UpstreamSettings, UpstreamTls,
};
use tokio_util::sync::CancellationToken;

use crate::admin::{Admin, View as AdminView};
use crate::agent::Dispatch;
use crate::agent::demo::DemoAgent;
use crate::api::error::SESSION_NOT_FOUND;
use crate::api::stream::{self, StreamSessionKey};
use crate::api::{AgentApi, ApiSettings, ApiState};
use crate::auth::{ApiKeys, StreamTokens};
use crate::durable::tail::SharedReads;
use crate::durable::{DurableApi, DurableSettings, DurableState};
use crate::metrics::Metrics;
use crate::stack::{self, AgentParts, Policies};
use crate::store::durable::memory::MemoryStreams;
use crate::store::durable::{StreamLimits, StreamStore};
use crate::store::memory::{MemoryLimits, MemoryStore};
use crate::store::redis::{RedisSettings, RedisStore, RedisStreams};
use crate::store::{Presence, SessionId, SessionStore, StoreError, StoreExistence};
use crate::tools::builtin::{JsonQueryTool, RegexExtractTool, Sha256Tool};
use crate::tools::graph::PlanLimits;
use crate::tools::http::HttpTool;
use crate::tools::{DynTool, Executor, ExecutorSettings, ToolRegistry, WorkerPool};

/// Why the application could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The session store could not be set up.
    #[error("session store: {0}")]
    Store(#[from] StoreError),
    /// A route's policy could not be set up.
    #[error("route {name}: {reason}")]
    Route {
        /// The route's name.
        name: String,
        /// What went wrong.
        reason: String,
    },
    /// An upstream group could not be set up.
    #[error("upstream {name}: {reason}")]
    Upstream {
        /// The group's name.
        name: String,
        /// What went wrong.
        reason: String,
    },
    /// The tools could not be registered (a Rust tool's name clashes with a configured one).
    #[error("tools: {0}")]
    Tools(String),
    /// The TLS certificates (`[server.tls]`) could not be loaded.
    #[error("server.tls.certificates: {0}")]
    Tls(#[from] TlsError),
}

/// A wired gateway application.
///
/// It has two parts. The core lives as long as the process: the session store (and the
/// shared rate limiter on its connection), the metrics, the tool worker pool. A generation
/// is everything else the configuration describes — routes, upstream groups and their
/// health checks, policies, auth, tools, feature flags, the agent stacks — and
/// [`App::reload`] replaces it while the gateway serves: new requests are routed by the new
/// generation, requests and SSE streams already running finish on the old one.
pub struct App {
    /// Cancelled at shutdown: streams end, demo runs stop.
    pub shutdown: CancellationToken,
    core: Core,
    /// The running generation: the one swap cell of hot reload. A reload stores a new
    /// generation here, and that is all it swaps: the gateway routes by its route table
    /// ([`LiveRoutes::following`]) and the admin endpoints read its view, per request.
    current: Arc<arc_swap::ArcSwap<Generation>>,
    /// Serialises reloads: one generation is built at a time.
    reloading: tokio::sync::Mutex<()>,
}

/// What every generation shares.
struct Core {
    store: Arc<dyn SessionStore>,
    /// Durable Streams (`kind = "durable"` routes), in the same store.
    streams: Arc<dyn StreamStore>,
    shared_limits: Option<Arc<dyn SharedGcra>>,
    metrics: Arc<Metrics>,
    /// Tools registered in Rust, served by every generation.
    custom_tools: ToolRegistry,
    pool: WorkerPool,
    /// The TLS listeners' certificates (`[server.tls]`), read again on every reload.
    certificates: Option<Arc<Certificates>>,
}

/// What one configuration built.
struct Generation {
    config: Config,
    /// The routes the gateway serves from.
    routes: RouteTable,
    api: AgentApi,
    /// The upstream groups routes send traffic to (what `/readyz` checks).
    required: BTreeMap<String, Arc<UpstreamGroup>>,
    /// What the admin endpoints show of this generation.
    admin: Arc<AdminView>,
    /// Cancelled when a newer generation replaces this one, or at shutdown: its health
    /// checks and background watchers stop (its requests and streams are not cut).
    retired: CancellationToken,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Changed keys that keep their running value until a restart (e.g. `server.listen`;
    /// the list is [`agentgate_config::restart_only_keys`]).
    pub needs_restart: Vec<String>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("routes", &self.generation().routes)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Wires the application. Must run inside a runtime that lives as long as the process
    /// serves (store connections and background tasks live there).
    pub async fn build(config: &Config) -> Result<Self, AppError> {
        Self::build_with_tools(config, ToolRegistry::new()).await
    }

    /// Like [`build`](Self::build), serving `tools` (written in Rust, see
    /// [`crate::tools::Tool`]) next to the `[tools.NAME]` of the configuration.
    pub async fn build_with_tools(config: &Config, tools: ToolRegistry) -> Result<Self, AppError> {
        let shutdown = CancellationToken::new();
        let (store, streams, shared_limits) = build_store(config).await?;
        let metrics = Arc::new(Metrics::new(store.stats()));
        let pool = WorkerPool::new(
            config.tools.worker_threads(),
            config.tools.queue_capacity,
            metrics.tools().queue_depth(),
        );
        let certificates = Self::certificates(config)?.map(Arc::new);
        let core = Core {
            store,
            streams,
            shared_limits,
            metrics,
            custom_tools: tools,
            pool,
            certificates,
        };
        let generation = Generation::build(&core, config, &shutdown)?;
        Ok(Self {
            shutdown,
            core,
            current: Arc::new(arc_swap::ArcSwap::from_pointee(generation)),
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    /// Loads the certificates `[server.tls]` names (`None` without TLS listeners); what
    /// `check-config` and the start of `serve` check.
    pub fn certificates(config: &Config) -> Result<Option<Certificates>, TlsError> {
        config
            .server
            .tls
            .as_ref()
            .map(|tls| Certificates::load(&certificate_files(tls)))
            .transpose()
    }

    /// Rebuilds everything but the core from `config` and serves it from the next request
    /// on. On error nothing changes: the running generation keeps serving. Must run on the
    /// runtime the app was built on.
    pub async fn reload(&self, config: &Config) -> Result<Reloaded, AppError> {
        let _one_at_a_time = self.reloading.lock().await;
        let running = self.generation();
        let (config, needs_restart) = config.keep_restart_only(&running.config);
        // The certificate files are read again (replaced in place on rotation); their
        // paths, like all of `[server]`, keep their running values.
        if let (Some(certificates), Some(tls)) = (&self.core.certificates, &config.server.tls) {
            certificates.reload(&certificate_files(tls))?;
        }
        let generation = Generation::build(&self.core, &config, &self.shutdown)?;
        // The one place a generation is swapped: configuration, routes and admin view at once.
        self.current.store(Arc::new(generation));
        running.retired.cancel();
        Ok(Reloaded { needs_restart })
    }

    /// The agent API service of the running generation.
    pub fn api(&self) -> AgentApi {
        self.generation().api.clone()
    }

    /// The configuration the running generation was built from.
    pub fn config(&self) -> Config {
        self.generation().config.clone()
    }

    /// The upstream groups the running generation's routes send traffic to, by name.
    pub fn required_upstreams(&self) -> BTreeMap<String, Arc<UpstreamGroup>> {
        self.generation().required.clone()
    }

    /// The admin endpoints (`server.admin_listen`) of this app; they follow reloads.
    pub fn admin(&self) -> Admin {
        let generation = self.generation();
        let current = Arc::clone(&self.current);
        Admin::new(
            &generation.config,
            &generation.admin,
            Arc::new(move || Arc::clone(&current.load().admin)),
        )
    }

    /// The application's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.core.metrics
    }

    /// The pingora gateway over this app's routes (which [`reload`](Self::reload) replaces).
    pub fn gateway(&self) -> Gateway {
        let access_log = self.generation().config.server.access_log;
        Gateway::new(LiveRoutes::following(Arc::clone(&self.current), |g| {
            &g.routes
        }))
        .with_access_log(access_log)
        .with_span_link(crate::telemetry::span_link())
    }

    /// The edge server's settings from the running configuration's `[server]`: its
    /// listeners (cleartext and TLS, with this app's certificates), threads, limits and
    /// grace period; the upgrade socket is left for the caller.
    pub fn server_settings(&self) -> ServerSettings {
        let server = &self.generation().config.server;
        let limits = &server.limits;
        ServerSettings {
            listen: server.listen.clone(),
            tls_listen: server
                .tls
                .as_ref()
                .map(|tls| tls.listen.clone())
                .unwrap_or_default(),
            certificates: self.core.certificates.clone(),
            h2c: server.h2c,
            limits: ConnectionLimits {
                head_timeout: Duration::from_millis(limits.head_timeout_ms),
                idle_timeout: Duration::from_secs(limits.idle_timeout_secs),
                write_timeout: Duration::from_millis(limits.write_timeout_ms),
                max_connections: limits.max_connections,
                max_connections_per_address: limits.max_connections_per_address,
                max_requests_per_connection: limits.max_requests_per_connection,
                trusted_proxies: limits.trusted_proxies.clone(),
            },
            stats: self.core.metrics.connection_stats(),
            threads: server.worker_threads(),
            grace: server.shutdown_grace(),
            upgrade_sock: std::path::PathBuf::new(),
            upgrade: false,
            read_buffer: Some(server.read_buffer_bytes),
        }
    }

    /// Binds the edge server's listeners for this app.
    pub fn edge_server(&self, settings: ServerSettings) -> std::io::Result<EdgeServer> {
        // Health checks run with their generation (see `Generation::build`), not the server.
        EdgeServer::bind(settings, self.gateway(), Vec::new())
    }

    fn generation(&self) -> Arc<Generation> {
        self.current.load_full()
    }
}

impl Generation {
    /// Builds a generation (its route table included); starts its health checks and watchers.
    /// Must run inside the runtime its background tasks belong on.
    fn build(core: &Core, config: &Config, shutdown: &CancellationToken) -> Result<Self, AppError> {
        // A child of the shutdown: cancelled at shutdown, or when a newer generation
        // replaces this one, whichever comes first.
        let retired = shutdown.child_token();
        let built = Self::wire(core, config, shutdown, &retired);
        if built.is_err() {
            // Stop what was started before the error (the existence cache's watcher).
            retired.cancel();
        }
        built
    }

    fn wire(
        core: &Core,
        config: &Config,
        shutdown: &CancellationToken,
        retired: &CancellationToken,
    ) -> Result<Self, AppError> {
        let store = &core.store;
        let dispatch: Option<Arc<dyn Dispatch>> = match config.agent.dispatch {
            DispatchKind::None => None,
            DispatchKind::Demo => Some(Arc::new(DemoAgent::new(
                Arc::clone(store),
                config.agent.demo.pace(),
                config.agent.demo.deltas as usize,
                shutdown.clone(),
            ))),
        };
        let metrics = &core.metrics;
        let groups = build_upstreams(&config.upstreams)?;
        let tools = build_tools(config, &groups, core)?;
        let state = ApiState {
            metrics: Arc::clone(metrics),
            store: Arc::clone(store),
            keys: ApiKeys::new(config.auth.api_keys.iter().map(String::as_str)),
            tokens: StreamTokens::from_config(&config.auth),
            dispatch,
            settings: ApiSettings {
                max_body_bytes: config.server.max_body_bytes,
                replay_batch: config.sse.replay_batch,
                heartbeat: config.sse.heartbeat(),
                retry_ms: config.sse.retry_ms,
            },
            shutdown: shutdown.clone(),
            tools,
        };
        let tokens = state.tokens.clone();
        let keys = state.keys.clone();
        let api = AgentApi::new(Arc::new(state));
        let agent = agent_parts(config, &api, store, tokens, metrics, retired)?;
        let policies = PolicyParts {
            metrics,
            shared_limits: core.shared_limits.as_ref(),
            keys: &keys,
        };
        let durable = DurableParts {
            streams: Arc::clone(&core.streams),
            keys: keys.clone(),
            shutdown: shutdown.clone(),
        };
        let routes = build_routes(config, &agent, &durable, &groups, &policies)?;
        // Built without error: from here on this generation runs.
        run_health_checks(&groups, retired);
        metrics.watch_upstreams(groups.values().cloned().collect());
        let required: BTreeMap<String, Arc<UpstreamGroup>> = groups
            .into_iter()
            .filter(|(name, _)| {
                config.routes.iter().any(|r| {
                    r.kind != RouteKind::Agent
                        && (r.upstream.as_ref() == Some(name)
                            || r.canary.as_ref().is_some_and(|c| &c.upstream == name))
                })
            })
            .collect();
        Ok(Self {
            routes,
            admin: Arc::new(AdminView::new(config, api.clone(), required.clone())),
            config: config.clone(),
            api,
            required,
            retired: retired.clone(),
        })
    }
}

/// Runs the groups' active health checks until `stop`.
fn run_health_checks(groups: &BTreeMap<String, Arc<UpstreamGroup>>, stop: &CancellationToken) {
    let (stopped, watch) = tokio::sync::watch::channel(false);
    for checker in groups.values().filter_map(|g| g.health_checker()) {
        let watch = watch.clone();
        tokio::spawn(async move { checker.run(watch).await });
    }
    let stop = stop.clone();
    tokio::spawn(async move {
        stop.cancelled().await;
        let _ = stopped.send(true);
    });
}

/// The certificate files `[server.tls]` names.
fn certificate_files(tls: &TlsConfig) -> Vec<CertificateFiles> {
    tls.certificates
        .iter()
        .map(|cert| CertificateFiles {
            chain: cert.chain.clone(),
            key: cert.key.clone(),
        })
        .collect()
}

/// What [`build_store`] makes: sessions, Durable Streams, and the shared rate limiter.
type Stores = (
    Arc<dyn SessionStore>,
    Arc<dyn StreamStore>,
    Option<Arc<dyn SharedGcra>>,
);

/// The session store, the Durable Streams store beside it and, with Redis, the shared rate
/// limiter on its connection.
async fn build_store(config: &Config) -> Result<Stores, StoreError> {
    let store = &config.store;
    Ok(match store.kind {
        StoreKind::Memory => (
            MemoryStore::new(MemoryLimits {
                events_maxlen: usize::try_from(store.events_maxlen).unwrap_or(usize::MAX),
                retention: store.retention(),
                session_ttl: store.session_ttl(),
                quotas: store.quotas,
            }),
            Arc::new(MemoryStreams::new()),
            None,
        ),
        StoreKind::Redis => {
            let redis = RedisStore::connect(RedisSettings {
                urls: store.redis.urls.clone(),
                cluster: store.redis.cluster,
                sentinel_master: store.redis.sentinel_master.clone(),
                sentinel_master_password: store.redis.sentinel_master_password.clone(),
                ack_replicas: store.redis.ack_replicas,
                ack_timeout: store.redis.ack_timeout(),
                timeout: store.redis.timeout(),
                connect_timeout: store.redis.connect_timeout(),
                events_maxlen: store.events_maxlen,
                retention: store.retention(),
                session_ttl: store.session_ttl(),
                pipelining: config.features.pipelining,
                hash_state: config.features.hash_state,
                quotas: store.quotas,
                subscribe: store.redis.subscribe,
            })
            .await?;
            let limiter = redis.rate_limiter();
            let streams = Arc::new(RedisStreams::new(Arc::clone(&redis)));
            (redis, streams, Some(limiter))
        }
    })
}

fn build_upstreams(
    upstreams: &BTreeMap<String, UpstreamConfig>,
) -> Result<BTreeMap<String, Arc<UpstreamGroup>>, AppError> {
    upstreams
        .iter()
        .map(|(name, u)| {
            let error = |reason: String| AppError::Upstream {
                name: name.clone(),
                reason,
            };
            let settings = UpstreamSettings {
                name: name.clone(),
                peers: u.peer_addrs().map_err(|e| error(e.to_string()))?,
                balance: match (&u.balance, &u.hash_on) {
                    (BalanceConfig::RoundRobin, _) => Balance::RoundRobin,
                    (BalanceConfig::ConsistentHash, HashOn::SessionId) => {
                        Balance::ConsistentHash(HashKey::Affinity)
                    }
                    (BalanceConfig::ConsistentHash, HashOn::Header(h)) => {
                        Balance::ConsistentHash(HashKey::Header(h.clone()))
                    }
                },
                connect_timeout: u.connect_timeout(),
                read_timeout: u.read_timeout(),
                idle_timeout: u.idle_timeout(),
                retry_connect: u.retry_connect,
                health_check: u.health_check.as_ref().map(|h| HealthCheck {
                    path: h.path.clone(),
                    interval: h.interval(),
                    timeout: h.timeout(),
                    healthy_threshold: h.healthy_threshold,
                    unhealthy_threshold: h.unhealthy_threshold,
                    expect_status: h.expect_status,
                }),
                tls: u.tls.as_ref().map(|t| UpstreamTls {
                    server_name: t.server_name.clone(),
                    ca_file: t.ca_file.clone(),
                }),
            };
            let group = UpstreamGroup::new(settings).map_err(|e| error(e.to_string()))?;
            Ok((name.clone(), Arc::new(group)))
        })
        .collect()
}

/// The tool executor: the configured tools (built-ins on the CPU worker pool, `http` tools
/// on the upstream groups, sharing their health checks) plus the Rust-registered `custom`.
fn build_tools(
    config: &Config,
    groups: &BTreeMap<String, Arc<UpstreamGroup>>,
    core: &Core,
) -> Result<Arc<Executor>, AppError> {
    let t = &config.tools;
    let mut tools = ToolRegistry::new();
    for (name, tool) in &t.tools {
        let built: Arc<dyn DynTool> = match tool.kind {
            ToolKind::Sha256 => Arc::new(Sha256Tool),
            ToolKind::JsonQuery => Arc::new(JsonQueryTool),
            ToolKind::RegexExtract => Arc::new(RegexExtractTool),
            ToolKind::Http => {
                // validate() guarantees an http tool names an existing group.
                let group = tool
                    .upstream
                    .as_ref()
                    .and_then(|u| groups.get(u))
                    .ok_or_else(|| AppError::Tools(format!("{name}: no such upstream")))?;
                Arc::new(HttpTool::new(
                    Arc::clone(group),
                    tool.http_path(),
                    t.max_output_bytes,
                ))
            }
        };
        tools
            .insert(name.clone(), built, tool.timeout())
            .map_err(|e| AppError::Tools(e.to_string()))?;
    }
    tools
        .merge(core.custom_tools.clone())
        .map_err(|e| AppError::Tools(e.to_string()))?;
    let settings = ExecutorSettings {
        max_parallel: t.max_parallel,
        parallel: config.features.parallel_tools,
        timeout: t.timeout(),
        limits: PlanLimits {
            max_calls: t.max_calls,
            max_input_bytes: t.max_input_bytes,
            max_batch_bytes: t.max_batch_bytes,
        },
    };
    Ok(Arc::new(Executor::new(
        tools,
        settings,
        core.pool.clone(),
        core.metrics.tools().clone(),
    )))
}

/// The layers of the agent routes, as the configuration switches them (composed in
/// [`stack::agent`]).
fn agent_parts(
    config: &Config,
    api: &AgentApi,
    store: &Arc<dyn SessionStore>,
    tokens: StreamTokens,
    metrics: &Metrics,
    stop: &CancellationToken,
) -> Result<AgentParts, AppError> {
    let error = |reason: String| AppError::Route {
        name: "agent".to_owned(),
        reason,
    };
    let fanout = if config.features.sse_fanout {
        let fanout = SseFanoutLayer::new(StreamSessionKey, config.sse.fanout.clone())
            .map_err(|e| error(e.to_string()))?;
        metrics.watch_fanout(&fanout.stats());
        Some(fanout)
    } else {
        None
    };
    let existence = if config.features.existence_cache {
        let existence = ExistenceCacheLayer::new(
            StreamSessionKey,
            StoreExistence(Arc::clone(store)),
            config.existence_cache.clone(),
        )
        .not_found(SESSION_NOT_FOUND);
        forget_on_presence_changes(store, existence.cache().clone(), stop.clone());
        Some(existence)
    } else {
        None
    };
    Ok(AgentParts {
        api: api.clone(),
        tokens,
        multiplex: SseMultiplexLayer::new(stream::demux(), config.sse.multiplex.clone()),
        existence,
        fanout,
    })
}

/// The store tells the existence cache which sessions appeared or expired.
fn forget_on_presence_changes(
    store: &Arc<dyn SessionStore>,
    cache: Cache<SessionId, StoreExistence>,
    shutdown: CancellationToken,
) {
    let mut presence = store.presence().subscribe();
    tokio::spawn(async move {
        loop {
            let change = tokio::select! {
                change = presence.next() => change,
                () = shutdown.cancelled() => None,
            };
            match change {
                Some(Presence::Changed(id)) => cache.invalidate(&id),
                Some(Presence::Unknown) => cache.clear(),
                None => return,
            }
        }
    });
}

fn build_routes(
    config: &Config,
    agent: &AgentParts,
    durable: &DurableParts,
    groups: &BTreeMap<String, Arc<UpstreamGroup>>,
    policies: &PolicyParts<'_>,
) -> Result<RouteTable, AppError> {
    let mut table = RouteTable::new();
    if config.routes.is_empty() {
        // No [[routes]]: the agent API serves every path.
        table.push(Route {
            name: "agent".to_owned(),
            host: None,
            path_prefix: "/".to_owned(),
            methods: Vec::new(),
            service: stack::agent(agent.clone(), Policies::default()),
        });
        return Ok(table);
    }
    for route in &config.routes {
        // Requests are matched by their normal path: a prefix in another form never matches.
        match agentgate_proxy::path::normalize(&route.path_prefix) {
            Ok(normal) if normal == route.path_prefix.as_str() => {}
            normal => {
                return Err(AppError::Route {
                    name: route.name.clone(),
                    reason: match normal {
                        Ok(normal) => format!(
                            "path_prefix {:?} never matches a normalised path; write {normal:?}",
                            route.path_prefix
                        ),
                        Err(e) => format!("path_prefix {:?}: {e}", route.path_prefix),
                    },
                });
            }
        }
        let route_policies = policies.of(route)?;
        let client = route
            .upstream
            .as_ref()
            .and_then(|u| groups.get(u))
            .map(|group| {
                UpstreamClient::new(Arc::clone(group))
                    .with_canary(route.canary.as_ref().and_then(|c| canary(c, groups)))
            });
        let service: RouteService = match (route.kind, client) {
            (RouteKind::Agent, _) => stack::agent(agent.clone(), route_policies),
            (RouteKind::Durable, _) => stack::durable(durable.api(route), route_policies),
            (RouteKind::Upstream, Some(client)) => stack::upstream(client, route_policies),
            (RouteKind::Sse, Some(client)) => {
                stack::sse(client, sse_fanout(config, route)?, route_policies)
            }
            // validate() guarantees that upstream and sse routes name an existing group.
            (RouteKind::Upstream | RouteKind::Sse, None) => {
                return Err(AppError::Route {
                    name: route.name.clone(),
                    reason: "names no defined upstream group".to_owned(),
                });
            }
        };
        table.push(Route {
            name: route.name.clone(),
            host: route.host.clone(),
            path_prefix: route.path_prefix.clone(),
            methods: route
                .methods
                .iter()
                .filter_map(|m| m.parse().ok())
                .collect(),
            service,
        });
    }
    Ok(table)
}

/// A route's canary over its group (validate() guarantees the group exists).
fn canary(
    config: &CanaryConfig,
    groups: &BTreeMap<String, Arc<UpstreamGroup>>,
) -> Option<Arc<Canary>> {
    let group = groups.get(&config.upstream)?;
    let header = (!config.header.is_empty())
        .then(|| http::HeaderName::from_bytes(config.header.as_bytes()).ok())
        .flatten();
    let cookie = (!config.cookie.is_empty()).then(|| config.cookie.clone());
    Some(Arc::new(Canary::new(
        Arc::clone(group),
        config.weight,
        header,
        cookie,
    )))
}

/// An `sse` route's fan-out (`features.sse_fanout`): viewers of one stream — same path and
/// query, and same credentials unless `share = "public"` — share one upstream request.
fn sse_fanout(
    config: &Config,
    route: &RouteConfig,
) -> Result<Option<SseFanoutLayer<PathAndCredentials>>, AppError> {
    if !config.features.sse_fanout {
        return Ok(None);
    }
    let error = |reason: String| AppError::Route {
        name: route.name.clone(),
        reason,
    };
    let share = match route.share {
        SseShare::Credentials => Share::Credentials {
            // validate() checked the names.
            headers: route
                .credential_headers
                .iter()
                .map(|name| http::HeaderName::from_bytes(name.as_bytes()))
                .collect::<Result<_, _>>()
                .map_err(|e| error(format!("credential_headers: {e}")))?,
        },
        SseShare::Public => Share::Public,
    };
    SseFanoutLayer::new(PathAndCredentials::new(share), config.sse.fanout.clone())
        .map(Some)
        .map_err(|e| error(e.to_string()))
}

/// How often rate limiters forget idle keys.
const RATE_LIMIT_PRUNE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// What the `durable` routes share.
struct DurableParts {
    streams: Arc<dyn StreamStore>,
    keys: ApiKeys,
    shutdown: CancellationToken,
}

impl DurableParts {
    /// The protocol service of a `kind = "durable"` route, as its `[routes.durable]` says.
    fn api(&self, route: &RouteConfig) -> DurableApi {
        let d = route.durable.clone().unwrap_or_default();
        DurableApi::new(DurableState {
            store: Arc::clone(&self.streams),
            keys: self.keys.clone(),
            settings: DurableSettings {
                write_needs_key: d.write == DurableAccess::ApiKey,
                read_needs_key: d.read == DurableAccess::ApiKey,
                max_append_bytes: d.max_append_bytes,
                max_read_bytes: d.max_read_bytes,
                long_poll_timeout: d.long_poll_timeout(),
                sse_max: d.sse_max(),
                max_ttl_secs: d.max_ttl_secs,
                limits: StreamLimits {
                    max_stream_bytes: d.max_stream_bytes,
                    max_streams: d.max_streams,
                    max_producers: d.max_producers,
                },
            },
            shutdown: self.shutdown.clone(),
            path_prefix: route.path_prefix.clone(),
            tail: SharedReads::default(),
        })
    }
}

/// What the routes' policy layers share.
struct PolicyParts<'a> {
    metrics: &'a Metrics,
    /// The shared rate limiter's store (with the Redis session store).
    shared_limits: Option<&'a Arc<dyn SharedGcra>>,
    /// The API keys a request's identity is verified against.
    keys: &'a ApiKeys,
}

impl PolicyParts<'_> {
    /// The policy layers `route` configures (composed in [`crate::stack`]).
    fn of(&self, route: &RouteConfig) -> Result<Policies, AppError> {
        let error = |reason: String| AppError::Route {
            name: route.name.clone(),
            reason,
        };
        let priority_queue = match &route.priority_queue {
            Some(policy) => {
                let mut policy = policy.clone();
                // Which requests are streams: the route kind decides unless the policy says.
                policy.streams.get_or_insert(match route.kind {
                    RouteKind::Sse => StreamRule::All,
                    RouteKind::Agent | RouteKind::Upstream => StreamRule::Path,
                    // Live reads are query parameters the client picks: no stream budget.
                    RouteKind::Durable => StreamRule::None,
                });
                let queue = PriorityQueueLayer::from_policy(&policy)
                    .map_err(|e| error(e.to_string()))?
                    .observed(Arc::new(self.metrics.queue_observer(&route.name)));
                Some(queue)
            }
            None => None,
        };
        let rate_limit = match (&route.rate_limit, self.shared_limits) {
            (None, _) => None,
            (Some(policy), _) if policy.store == LimitStore::Local => {
                let limit =
                    RateLimitLayer::from_policy(policy).map_err(|e| error(e.to_string()))?;
                // Keyed state never shrinks by itself: drop idle keys (peer IPs...) every
                // minute. The task ends when the route's stack is dropped.
                drop(limit.spawn_pruner(RATE_LIMIT_PRUNE_INTERVAL));
                self.metrics
                    .watch_rate_limit_keys(&route.name, &limit.stats());
                Some(limit)
            }
            (Some(policy), Some(gcra)) => {
                // One bucket per route and key, shared by every gateway on this Redis.
                let prefix = format!("agentgate:rl:{}:", route.name);
                let limit = RateLimitLayer::shared_from_policy(policy, Arc::clone(gcra), prefix)
                    .map_err(|e| error(e.to_string()))?;
                Some(limit)
            }
            // validate() rejects `store = "redis"` without a Redis session store.
            (Some(_), None) => {
                return Err(error(
                    "rate_limit.store = \"redis\" needs store.kind = \"redis\"".to_owned(),
                ));
            }
        };
        // The key is verified per request only if a policy reads the client's identity.
        let uses_api_key = route
            .rate_limit
            .as_ref()
            .is_some_and(|limit| limit.key == KeyKind::ApiKey)
            || route
                .priority_queue
                .as_ref()
                .is_some_and(|queue| !queue.api_key_priorities.is_empty());
        Ok(Policies {
            identify_keys: uses_api_key.then(|| self.keys.clone()),
            rejected: rate_limit
                .is_some()
                .then(|| self.metrics.rate_limit_rejections(&route.name)),
            rate_limit,
            priority_queue,
        })
    }
}
