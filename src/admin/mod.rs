//! The admin listener (`server.admin_listen`): operators' endpoints, off the public
//! listeners.
//!
//! | path | answer |
//! |---|---|
//! | `GET /metrics` | Prometheus text (the same registry as the public `/metrics`) |
//! | `GET /healthz` | `200 {"status":"ok"}` while the process serves |
//! | `GET /readyz` | `200` when the session store answers and every upstream group a route uses has a healthy peer, else `503`; the body lists each check |
//! | `GET /admin/config` | the effective configuration as JSON, secrets and URL credentials redacted ([`redact`]) |
//! | `GET /` | the live status page ([`STATUS_PAGE`]): sessions, streams, requests/s, p99, store ops/s, sheds, rejections, updated every second, and a session viewer |
//! | `GET /admin/live` | SSE: a JSON snapshot of those figures every second ([`live`]) |
//! | `GET /admin/sessions/{id}/stream` | SSE: one session's events, resumable, no stream token needed ([`viewer`]) |
//!
//! Every request first passes the `Host` allow-list ([`hosts`]: 421 otherwise, against DNS
//! rebinding), then, when `server.admin_tokens` is set, the token check ([`token`]: 401
//! otherwise; `/healthz` stays open). Both are read at start; `[server]` changes need a
//! restart.
//!
//! It is a plain hyper server on the application runtime, so it keeps answering while the
//! edge proxy is saturated. Its streams end at shutdown.

pub mod hosts;
pub mod live;
pub mod redact;
pub mod token;
pub mod viewer;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use agentgate_config::Config;
use agentgate_proxy::UpstreamGroup;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};

pub use hosts::AdminHosts;
pub use redact::{redact_url, redacted};
pub use token::AdminTokens;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{AgentApi, ApiError, Body, body};
use crate::metrics::Metrics;
use crate::store::{SessionId, SessionStore};

/// The live status page served at `GET /`: one self-contained HTML file (no external
/// scripts, styles or fonts) fed by `GET /admin/live`.
///
/// Query parameters: `session=<id>` follows that session at once; `report` (any value) makes
/// the page POST what it shows (JSON) to its own origin's `/admin/report` after every
/// update. The admin listener answers that with 405 and the page ignores it; the browser
/// test puts a proxy in front of the listener that collects them. The page never contacts
/// another origin.
pub const STATUS_PAGE: &str = include_str!("status.html");

/// The status page's Content-Security-Policy: its inline script and style, connections to
/// its own origin only (the browser itself enforces that the page reports nowhere else),
/// no forms posting anywhere, no framing by other sites.
const STATUS_PAGE_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// What the admin endpoints read.
pub struct Admin {
    metrics: Arc<Metrics>,
    store: Arc<dyn SessionStore>,
    /// What the running configuration says: the running generation's view, read per request
    /// (a reload swaps the generation; nothing here is updated by hand).
    view: CurrentView,
    /// The live snapshots, once [`serve`](Self::serve) has started their task.
    live: OnceLock<live::Latest>,
    /// The application's shutdown: admin streams end with it.
    shutdown: CancellationToken,
    /// The `Host` names answered (`server.admin_hosts`).
    hosts: AdminHosts,
    /// The accepted tokens (`server.admin_tokens`).
    tokens: AdminTokens,
}

/// Reads the running generation's [`View`].
pub type CurrentView = Arc<dyn Fn() -> Arc<View> + Send + Sync>;

/// The configuration-dependent part of the admin endpoints, built once per configuration
/// (each [`App`](crate::app::App) generation holds one).
pub struct View {
    /// The agent API, for the session viewer.
    api: AgentApi,
    /// The upstream groups routes send traffic to, by name.
    required: BTreeMap<String, Arc<UpstreamGroup>>,
    /// `/admin/config`, rendered once per configuration.
    config: String,
}

impl View {
    /// The view of `config`, its agent API and the upstream groups its routes use.
    pub fn new(
        config: &Config,
        api: AgentApi,
        required: BTreeMap<String, Arc<UpstreamGroup>>,
    ) -> Self {
        Self {
            api,
            required,
            config: redacted(config).to_string(),
        }
    }
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("required", &self.view().required.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Admin {
    /// The admin endpoints for `config` (its `server.admin_hosts` and `admin_tokens`), over
    /// whatever view `current` returns — the running generation's, so a reload needs no
    /// update here. `view` is the current one, for the metrics, store and shutdown its agent
    /// API shares with every generation.
    pub fn new(config: &Config, view: &View, current: CurrentView) -> Self {
        let state = view.api.state();
        Self {
            metrics: Arc::clone(&state.metrics),
            store: Arc::clone(&state.store),
            shutdown: state.shutdown.clone(),
            hosts: AdminHosts::new(&config.server.admin_hosts),
            tokens: AdminTokens::new(&config.server.admin_tokens),
            view: current,
            live: OnceLock::new(),
        }
    }

    fn view(&self) -> Arc<View> {
        (self.view)()
    }

    /// Answers one admin request: the Host and token checks, then the endpoint.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body> {
        let (parts, _body) = req.into_parts();
        if let Err(e) = self.hosts.check(&parts) {
            return e.into_response();
        }
        if parts.method != Method::GET && parts.method != Method::HEAD {
            return ApiError::method_not_allowed("GET, HEAD").into_response();
        }
        if let Some(login) = self.tokens.login(&parts) {
            return login;
        }
        if let Err(e) = self.tokens.check(&parts) {
            return e.into_response();
        }
        let path = parts.uri.path();
        if let Some(id) = path
            .strip_prefix("/admin/sessions/")
            .and_then(|rest| rest.strip_suffix("/stream"))
        {
            return viewer::follow(&self.view().api, id, &parts).await;
        }
        match path {
            "/" => {
                let mut page = reply(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    Bytes::from_static(STATUS_PAGE.as_bytes()),
                );
                page.headers_mut().insert(
                    header::CONTENT_SECURITY_POLICY,
                    http::HeaderValue::from_static(STATUS_PAGE_CSP),
                );
                page
            }
            "/admin/live" => {
                // Started by `serve`; started here when `handle` is used without it.
                let latest = self
                    .live
                    .get_or_init(|| live::spawn(Arc::clone(&self.metrics), self.shutdown.clone()));
                live::stream(latest.clone(), self.shutdown.clone())
            }
            "/metrics" => reply(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                self.metrics.render(),
            ),
            "/healthz" => reply(
                StatusCode::OK,
                "application/json",
                json!({"status": "ok"}).to_string(),
            ),
            "/readyz" => {
                let (ready, checks) = self.readiness().await;
                let status = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                reply(
                    status,
                    "application/json",
                    json!({"ready": ready, "checks": checks}).to_string(),
                )
            }
            "/admin/config" => reply(
                StatusCode::OK,
                "application/json",
                self.view().config.clone(),
            ),
            _ => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such admin endpoint; see /, /metrics, /healthz, /readyz, /admin/config, \
                 /admin/live, /admin/sessions/{id}/stream",
            )
            .into_response(),
        }
    }

    /// Whether the gateway can serve, and why not.
    async fn readiness(&self) -> (bool, Value) {
        let mut ready = true;
        // One cheap store round trip: "does this session exist?" of an id nobody uses.
        let probe: Option<SessionId> = "readyz-probe".parse().ok();
        let store = match probe {
            Some(probe) => match self.store.exists(&probe).await {
                Ok(_) => json!("ok"),
                Err(e) => {
                    ready = false;
                    json!(e.to_string())
                }
            },
            None => json!("ok"),
        };
        let mut upstreams = serde_json::Map::new();
        for (name, group) in &self.view().required {
            let (healthy, peers) = group.peer_health();
            ready &= healthy > 0;
            upstreams.insert(name.clone(), json!({"healthy": healthy, "peers": peers}));
        }
        (ready, json!({"store": store, "upstreams": upstreams}))
    }

    /// Serves the admin endpoints on `listener` until `shutdown`.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        self.live
            .get_or_init(|| live::spawn(Arc::clone(&self.metrics), shutdown.clone()));
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = shutdown.cancelled() => return,
            };
            let Ok((stream, _)) = accepted else {
                continue;
            };
            let admin = Arc::clone(&self);
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let admin = Arc::clone(&admin);
                    async move { Ok::<_, Infallible>(admin.handle(req).await) }
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = conn => {}
                    () = shutdown.cancelled() => {}
                }
            });
        }
    }

    /// Binds `addr` and serves on the current runtime until `shutdown`; returns the bound
    /// address.
    pub async fn start(
        self: Arc<Self>,
        addr: SocketAddr,
        shutdown: CancellationToken,
    ) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        tokio::spawn(self.serve(listener, shutdown));
        Ok(bound)
    }
}

fn reply(status: StatusCode, content_type: &'static str, text: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(body::full(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}
