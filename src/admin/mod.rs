//! The admin listener (`server.admin_listen`): operators' endpoints, off the public
//! listeners.
//!
//! | path | answer |
//! |---|---|
//! | `GET /metrics` | Prometheus text (the same registry as the public `/metrics`) |
//! | `GET /healthz` | `200 {"status":"ok"}` while the process serves |
//! | `GET /readyz` | `200` when the session store answers and every upstream group a route uses has a healthy peer, else `503`; the body lists each check |
//! | `GET /admin/config` | the effective configuration as JSON, secrets redacted |
//! | `GET /` | the live status page ([`STATUS_PAGE`]): sessions, streams, requests/s, p99, store ops/s, sheds, rejections, updated every second, and a session viewer |
//! | `GET /admin/live` | SSE: a JSON snapshot of those figures every second ([`live`]) |
//! | `GET /admin/sessions/{id}/stream` | SSE: one session's events, resumable, no stream token needed ([`viewer`]) |
//!
//! It is a plain hyper server on the application runtime, so it keeps answering while the
//! edge proxy is saturated. Its streams end at shutdown.

pub mod live;
pub mod viewer;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use agentgate_config::Config;
use agentgate_proxy::UpstreamGroup;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{AgentApi, Body, body};
use crate::metrics::Metrics;
use crate::store::{SessionId, SessionStore};

/// Shown instead of a secret.
const REDACTED: &str = "<redacted>";

/// The live status page served at `GET /`: one self-contained HTML file (no external
/// scripts, styles or fonts) fed by `GET /admin/live`.
///
/// Query parameters: `session=<id>` follows that session at once; `report=<url>` makes the
/// page POST what it shows (JSON) to `url` after every update, which is how the browser
/// test reads it.
pub const STATUS_PAGE: &str = include_str!("status.html");

/// What the admin endpoints read.
pub struct Admin {
    metrics: Arc<Metrics>,
    store: Arc<dyn SessionStore>,
    /// What the running configuration says; replaced by [`Admin::update`] on reload.
    view: Mutex<Arc<View>>,
    /// The live snapshots, once [`serve`](Self::serve) has started their task.
    live: OnceLock<live::Latest>,
    /// The application's shutdown: admin streams end with it.
    shutdown: CancellationToken,
}

/// The configuration-dependent part of the admin endpoints.
struct View {
    /// The agent API, for the session viewer.
    api: AgentApi,
    /// The upstream groups routes send traffic to, by name.
    required: BTreeMap<String, Arc<UpstreamGroup>>,
    /// `/admin/config`, rendered once per configuration.
    config: String,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("required", &self.view().required.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Admin {
    /// The admin endpoints over the application's agent API (its metrics, store and
    /// shutdown) and required upstream groups, for `config`.
    pub fn new(
        config: &Config,
        api: AgentApi,
        required: BTreeMap<String, Arc<UpstreamGroup>>,
    ) -> Self {
        let state = api.state();
        Self {
            metrics: Arc::clone(&state.metrics),
            store: Arc::clone(&state.store),
            shutdown: state.shutdown.clone(),
            view: Mutex::new(Arc::new(View {
                api,
                required,
                config: redacted(config).to_string(),
            })),
            live: OnceLock::new(),
        }
    }

    /// Answers for a reloaded configuration (its agent API and required upstream groups)
    /// from now on.
    pub fn update(
        &self,
        config: &Config,
        api: AgentApi,
        required: BTreeMap<String, Arc<UpstreamGroup>>,
    ) {
        let view = Arc::new(View {
            api,
            required,
            config: redacted(config).to_string(),
        });
        *self.view.lock().unwrap_or_else(|e| e.into_inner()) = view;
    }

    fn view(&self) -> Arc<View> {
        Arc::clone(&self.view.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Answers one admin request.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "application/json",
                json!({"error": {"code": "method_not_allowed", "message": "admin endpoints are read with GET"}})
                    .to_string(),
            );
        }
        let path = req.uri().path();
        if let Some(id) = path
            .strip_prefix("/admin/sessions/")
            .and_then(|rest| rest.strip_suffix("/stream"))
        {
            let id = id.to_owned();
            let (parts, _body) = req.into_parts();
            return viewer::follow(&self.view().api, &id, &parts).await;
        }
        match path {
            "/" => reply(
                StatusCode::OK,
                "text/html; charset=utf-8",
                Bytes::from_static(STATUS_PAGE.as_bytes()),
            ),
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
            "/admin/config" => reply(StatusCode::OK, "application/json", self.view().config.clone()),
            _ => reply(
                StatusCode::NOT_FOUND,
                "application/json",
                json!({"error": {"code": "not_found", "message": "no such admin endpoint; see /, /metrics, /healthz, /readyz, /admin/config, /admin/live, /admin/sessions/{id}/stream"}})
                    .to_string(),
            ),
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

/// The configuration as JSON with API keys, the token secret and Redis passwords replaced.
pub fn redacted(config: &Config) -> Value {
    let mut value = serde_json::to_value(config).unwrap_or(Value::Null);
    if let Some(keys) = value
        .pointer_mut("/auth/api_keys")
        .and_then(Value::as_array_mut)
    {
        for key in keys {
            *key = json!(REDACTED);
        }
    }
    if let Some(secret) = value.pointer_mut("/auth/stream_token_secret") {
        *secret = json!(REDACTED);
    }
    if let Some(secrets) = value
        .pointer_mut("/auth/stream_token_secrets")
        .and_then(Value::as_array_mut)
    {
        for secret in secrets {
            *secret = json!(REDACTED);
        }
    }
    if let Some(urls) = value
        .pointer_mut("/store/redis/urls")
        .and_then(Value::as_array_mut)
    {
        for url in urls {
            if let Some(text) = url.as_str() {
                *url = json!(redact_url_password(text));
            }
        }
    }
    value
}

/// `redis://user:secret@host` → `redis://user:<redacted>@host`.
fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:{REDACTED}@{host}"),
        None => format!("{scheme}://{REDACTED}@{host}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let mut config = Config::default();
        config.auth.api_keys = vec!["k-0123456789abcdef".to_owned()];
        config.auth.stream_token_secret = "s".repeat(40);
        config.auth.stream_token_secrets = vec!["r".repeat(40)];
        config.store.redis.urls = vec![
            "redis://app:hunter2@10.0.0.1:6379/0".to_owned(),
            "redis://10.0.0.2:6379".to_owned(),
            "rediss://:only-password@host:6380".to_owned(),
        ];
        let value = redacted(&config);
        let text = value.to_string();
        for secret in [
            "k-0123456789abcdef",
            &"s".repeat(40),
            &"r".repeat(40),
            "hunter2",
            "only-password",
        ] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert_eq!(
            value["store"]["redis"]["urls"],
            json!([
                "redis://app:<redacted>@10.0.0.1:6379/0",
                "redis://10.0.0.2:6379",
                "rediss://:<redacted>@host:6380"
            ])
        );
        assert_eq!(value["auth"]["api_keys"], json!(["<redacted>"]));
    }
}
