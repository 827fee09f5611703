//! The one place where configuration becomes stores, handlers, layer stacks and routes.
//!
//! [`App::build`] reads a validated [`Config`] and wires, in order: the session store (memory
//! or Redis), auth, metrics, the agent dispatcher, the upstream groups, the tool executor
//! (configured and Rust-registered tools, the CPU worker pool), the [`AgentApi`] service and
//! the route table. [`App::edge_server`] puts it all behind the pingora edge proxy.
//!
//! Per route, the stack is fixed here, outermost first:
//! - agent routes: bridge ─► SSE multiplex (`GET /v2/stream`, each session through the
//!   rest) ─► existence cache (stream connects; `features.existence_cache`) ─► SSE fan-out
//!   (viewers of a session share one tail; `features.sse_fanout`) ─► `AgentApi` ─►
//!   `SessionStore`
//! - upstream routes: admission (the route's policies around "admit") ─► pingora proxies
//!   to the group; the admission response, and the queue slot in it, lives until pingora
//!   has sent the whole response
//! - sse routes: SSE fan-out (one upstream request per stream, whatever the viewers;
//!   `features.sse_fanout`) ─► a pooled HTTP client to the group
//! - a route's policies, on any kind, outermost first: rate limit (in process, or in
//!   Redis shared by every gateway: `store = "redis"`) ─► priority queue

use std::collections::BTreeMap;
use std::sync::Arc;

use agentgate_config::{
    Balance as BalanceConfig, Config, Dispatch as DispatchKind, HashOn, RouteConfig, RouteKind,
    StoreKind, ToolKind, UpstreamConfig,
};
use agentgate_middleware::existence_cache::{ExistenceCache, ExistenceCacheLayer};
use agentgate_middleware::priority_queue::PriorityQueueLayer;
use agentgate_middleware::rate_limit::{
    LimitStore, PeerAddr, RateLimitLayer, RateLimited, SharedGcra, SharedRateLimitLayer,
};
use agentgate_middleware::sse::fanout::{PathAndAuth, SseFanoutLayer};
use agentgate_middleware::sse::multiplex::{QueryDemux, SseMultiplexLayer};
use agentgate_proxy::bridge::{ClientAddr, RequestBody};
use agentgate_proxy::upstream::HealthChecker;
use agentgate_proxy::{
    Balance, EdgeServer, Gateway, HashKey, HealthCheck, Route, RouteService, RouteTable,
    ServerSettings, Target, UpstreamClient, UpstreamGroup, UpstreamSettings, admit_all,
    route_service,
};
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower::util::Either;

use crate::admin::Admin;
use crate::agent::Dispatch;
use crate::agent::demo::DemoAgent;
use crate::api::error::SESSION_NOT_FOUND;
use crate::api::stream::StreamSessionKey;
use crate::api::{AgentApi, ApiSettings, ApiState};
use crate::auth::{ApiKeys, StreamTokens};
use crate::metrics::Metrics;
use crate::store::memory::{MemoryLimits, MemoryStore};
use crate::store::redis::{RedisSettings, RedisStore};
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
}

/// A wired gateway application.
pub struct App {
    /// The agent API service.
    pub api: AgentApi,
    /// Cancelled at shutdown: streams end, demo runs stop.
    pub shutdown: CancellationToken,
    routes: RouteTable,
    health: Vec<Arc<dyn HealthChecker>>,
    /// The upstream groups routes send traffic to (what `/readyz` checks).
    required: BTreeMap<String, Arc<UpstreamGroup>>,
    /// `server.access_log`.
    access_log: bool,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("routes", &self.routes)
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
        let (store, shared_limits) = build_store(config).await?;
        let dispatch: Option<Arc<dyn Dispatch>> = match config.agent.dispatch {
            DispatchKind::None => None,
            DispatchKind::Demo => Some(Arc::new(DemoAgent::new(
                Arc::clone(&store),
                config.agent.demo.pace(),
                config.agent.demo.deltas as usize,
                shutdown.clone(),
            ))),
        };
        let metrics = Arc::new(Metrics::new(store.stats()));
        let groups = build_upstreams(&config.upstreams)?;
        let tools = build_tools(config, &groups, tools, &metrics)?;
        let state = ApiState {
            metrics: Arc::clone(&metrics),
            store,
            keys: ApiKeys::new(config.auth.api_keys.iter().map(String::as_str)),
            tokens: StreamTokens::new(
                config.auth.stream_token_secret.as_bytes(),
                config.auth.stream_token_ttl(),
            ),
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
        let (store, tokens) = (Arc::clone(&state.store), state.tokens.clone());
        let api = AgentApi::new(Arc::new(state));
        let health = groups.values().filter_map(|g| g.health_checker()).collect();
        metrics.watch_upstreams(groups.values().cloned().collect());
        let agent = agent_stack(config, &api, store, tokens, &metrics, &shutdown)?;
        let routes = build_routes(config, agent, &groups, &metrics, shared_limits.as_ref())?;
        let required = groups
            .into_iter()
            .filter(|(name, _)| {
                config
                    .routes
                    .iter()
                    .any(|r| r.kind != RouteKind::Agent && r.upstream.as_ref() == Some(name))
            })
            .collect();
        Ok(Self {
            api,
            shutdown,
            routes,
            health,
            required,
            access_log: config.server.access_log,
        })
    }

    /// The admin endpoints (`server.admin_listen`) of this app, for `config` (the one it was
    /// built from).
    pub fn admin(&self, config: &Config) -> Admin {
        let state = self.api.state();
        Admin::new(
            config,
            Arc::clone(&state.metrics),
            Arc::clone(&state.store),
            self.required.clone(),
        )
    }

    /// The pingora gateway over this app's routes.
    pub fn gateway(&self) -> Gateway {
        Gateway::new(self.routes.clone())
            .with_access_log(self.access_log)
            .with_span_link(crate::telemetry::span_link())
    }

    /// Binds the edge server's listeners for this app.
    pub fn edge_server(&self, settings: ServerSettings) -> std::io::Result<EdgeServer> {
        EdgeServer::bind(settings, self.gateway(), self.health.clone())
    }
}

/// The session store and, with Redis, the shared rate limiter on its connection.
async fn build_store(
    config: &Config,
) -> Result<(Arc<dyn SessionStore>, Option<Arc<dyn SharedGcra>>), StoreError> {
    let store = &config.store;
    Ok(match store.kind {
        StoreKind::Memory => (
            MemoryStore::new(MemoryLimits {
                events_maxlen: usize::try_from(store.events_maxlen).unwrap_or(usize::MAX),
                retention: store.retention(),
                session_ttl: store.session_ttl(),
            }),
            None,
        ),
        StoreKind::Redis => {
            let redis = RedisStore::connect(RedisSettings {
                urls: store.redis.urls.clone(),
                cluster: store.redis.cluster,
                timeout: store.redis.timeout(),
                connect_timeout: store.redis.connect_timeout(),
                events_maxlen: store.events_maxlen,
                retention: store.retention(),
                session_ttl: store.session_ttl(),
            })
            .await?;
            let limiter = redis.rate_limiter();
            (redis, Some(limiter))
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
                        Balance::ConsistentHash(HashKey::SessionId)
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
    custom: ToolRegistry,
    metrics: &Metrics,
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
        .merge(custom)
        .map_err(|e| AppError::Tools(e.to_string()))?;
    let pool = WorkerPool::new(
        t.worker_threads(),
        t.queue_capacity,
        metrics.tools().queue_depth(),
    );
    let settings = ExecutorSettings {
        max_parallel: t.max_parallel,
        parallel: config.features.parallel_tools,
        timeout: t.timeout(),
        limits: PlanLimits {
            max_calls: t.max_calls,
            max_input_bytes: t.max_input_bytes,
        },
    };
    Ok(Arc::new(Executor::new(
        tools,
        settings,
        pool,
        metrics.tools().clone(),
    )))
}

/// The agent routes' stack, outermost first.
fn agent_stack(
    config: &Config,
    api: &AgentApi,
    store: Arc<dyn SessionStore>,
    tokens: StreamTokens,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Result<RouteService, AppError> {
    let error = |reason: String| AppError::Route {
        name: "agent".to_owned(),
        reason,
    };
    // Built inside out.
    let mut service = route_service(api.clone());
    // fan-out: every viewer of a session shares one store tail
    if config.features.sse_fanout {
        let fanout =
            SseFanoutLayer::new(StreamSessionKey(tokens.clone()), config.sse.fanout.clone())
                .map_err(|e| error(e.to_string()))?;
        metrics.watch_fanout(fanout.stats());
        service = route_service(ServiceBuilder::new().layer(fanout).service(service));
    }
    // existence cache: concurrent stream connects to one session share one lookup
    if config.features.existence_cache {
        let existence = ExistenceCacheLayer::new(
            StreamSessionKey(tokens),
            StoreExistence(Arc::clone(&store)),
            config.existence_cache.clone(),
        )
        .not_found(SESSION_NOT_FOUND);
        forget_on_presence_changes(&store, existence.cache().clone(), shutdown.clone());
        service = route_service(ServiceBuilder::new().layer(existence).service(service));
    }
    // multiplex: GET /v2/stream?sessions=a,b&tokens=ta,tb, each session through the above
    let multiplex = SseMultiplexLayer::new(
        QueryDemux {
            path: "/v2/stream".to_owned(),
            streams_param: "sessions".to_owned(),
            tokens_param: "tokens".to_owned(),
            inner_path: "/v2/sessions/{}/stream".to_owned(),
            inner_token_param: "token".to_owned(),
        },
        config.sse.multiplex.clone(),
    );
    Ok(route_service(
        ServiceBuilder::new().layer(multiplex).service(service),
    ))
}

/// The store tells the existence cache which sessions appeared or expired.
fn forget_on_presence_changes(
    store: &Arc<dyn SessionStore>,
    cache: ExistenceCache<SessionId, StoreExistence>,
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
    agent: RouteService,
    groups: &BTreeMap<String, Arc<UpstreamGroup>>,
    metrics: &Metrics,
    shared_limits: Option<&Arc<dyn SharedGcra>>,
) -> Result<RouteTable, AppError> {
    let mut table = RouteTable::new();
    if config.routes.is_empty() {
        // No [[routes]]: the agent API serves every path.
        table.push(Route {
            name: "agent".to_owned(),
            host: None,
            path_prefix: "/".to_owned(),
            methods: Vec::new(),
            target: Target::Service(agent),
        });
        return Ok(table);
    }
    for route in &config.routes {
        let has_policies = route.rate_limit.is_some() || route.priority_queue.is_some();
        let target = match (
            route.kind,
            route.upstream.as_ref().and_then(|u| groups.get(u)),
        ) {
            (RouteKind::Upstream, Some(group)) => Target::Upstream {
                group: Arc::clone(group),
                // admission: the route's policies around "admit"; none without policies
                admission: if has_policies {
                    Some(with_policies(route, admit_all(), metrics, shared_limits)?)
                } else {
                    None
                },
            },
            (RouteKind::Sse, Some(group)) => {
                let streams = sse_upstream_stack(config, route, group)?;
                Target::Service(with_policies(route, streams, metrics, shared_limits)?)
            }
            (RouteKind::Agent, _) => {
                Target::Service(with_policies(route, agent.clone(), metrics, shared_limits)?)
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
            target,
        });
    }
    Ok(table)
}

/// An `sse` route's stack, outermost first: SSE fan-out (viewers of one stream — same path,
/// query and `Authorization` — share one upstream request; `features.sse_fanout`) ─► a
/// pooled HTTP client to the group's peers.
fn sse_upstream_stack(
    config: &Config,
    route: &RouteConfig,
    group: &Arc<UpstreamGroup>,
) -> Result<RouteService, AppError> {
    let client = UpstreamClient::new(Arc::clone(group));
    if !config.features.sse_fanout {
        return Ok(route_service(client));
    }
    let fanout = SseFanoutLayer::new(PathAndAuth, config.sse.fanout.clone()).map_err(|e| {
        AppError::Route {
            name: route.name.clone(),
            reason: e.to_string(),
        }
    })?;
    Ok(route_service(
        ServiceBuilder::new().layer(fanout).service(client),
    ))
}

/// How often rate limiters forget idle keys.
const RATE_LIMIT_PRUNE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Wraps `inner` in the route's policy layers. The stack, outermost first:
/// rate limit (local, or shared in Redis) ─► priority queue ─► `inner`.
fn with_policies(
    route: &RouteConfig,
    inner: RouteService,
    metrics: &Metrics,
    shared_limits: Option<&Arc<dyn SharedGcra>>,
) -> Result<RouteService, AppError> {
    let error = |reason: String| AppError::Route {
        name: route.name.clone(),
        reason,
    };
    let mut service = inner;
    // priority queue: bounded, classed waiting; a slot is held until the body ends
    if let Some(policy) = &route.priority_queue {
        let queue = PriorityQueueLayer::from_policy(policy)
            .map_err(|e| error(e.to_string()))?
            .observed(Arc::new(metrics.queue_observer(&route.name)));
        service = route_service(ServiceBuilder::new().layer(queue).service(service));
    }
    // rate limit: per-key GCRA, 429 before anything else runs
    if let Some(policy) = &route.rate_limit {
        let limit = match (policy.store, shared_limits) {
            (LimitStore::Local, _) => {
                let limit =
                    RateLimitLayer::from_policy(policy).map_err(|e| error(e.to_string()))?;
                // Keyed state never shrinks by itself: drop idle keys (peer IPs...) every
                // minute. The task ends when the route's stack is dropped.
                drop(limit.spawn_pruner(RATE_LIMIT_PRUNE_INTERVAL));
                Either::Left(limit)
            }
            (LimitStore::Redis, Some(gcra)) => {
                // One bucket per route and key, shared by every gateway on this Redis.
                let prefix = format!("agentgate:rl:{}:", route.name);
                let limit = SharedRateLimitLayer::from_policy(policy, Arc::clone(gcra), prefix)
                    .map_err(|e| error(e.to_string()))?;
                Either::Right(limit)
            }
            // validate() rejects `store = "redis"` without a Redis session store.
            (LimitStore::Redis, None) => {
                return Err(error(
                    "rate_limit.store = \"redis\" needs store.kind = \"redis\"".to_owned(),
                ));
            }
        };
        let rejected = metrics.rate_limit_rejections(&route.name);
        service = route_service(
            ServiceBuilder::new()
                .map_response(count_rejections(rejected))
                .map_request(peer_addr::<RequestBody>)
                .layer(limit)
                .service(service),
        );
    }
    Ok(service)
}

/// Counts the rate limiter's own 429s (marked [`RateLimited`]), not the service's.
fn count_rejections<B>(
    rejected: prometheus_client::metrics::counter::Counter,
) -> impl Fn(http::Response<B>) -> http::Response<B> + Clone {
    move |response| {
        if response.extensions().get::<RateLimited>().is_some() {
            rejected.inc();
        }
        response
    }
}

/// Hands the bridge's client address to the rate limiter's peer-IP key.
fn peer_addr<B>(mut req: http::Request<B>) -> http::Request<B> {
    if let Some(ClientAddr(addr)) = req.extensions().get::<ClientAddr>().copied() {
        req.extensions_mut().insert(PeerAddr(addr));
    }
    req
}
