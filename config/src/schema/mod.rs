//! The configuration schema: plain serde structs, one file per top-level table (or array of
//! tables: `[[routes]]`, map of tables: `[upstreams.NAME]`).
//!
//! Every struct is `#[serde(default, deny_unknown_fields)]`: any key may be left out (its
//! documented default applies) and a misspelt key is an error instead of being ignored.
//! Durations are plain integers whose unit is in the key's name (`_secs`, `_ms`); each has a
//! helper that returns a [`std::time::Duration`].

mod agent;
mod auth;
mod durable;
mod features;
mod routes;
mod server;
mod sse;
mod store;
mod telemetry;
mod tools;
mod upstreams;

pub use agent::{AgentConfig, DemoConfig, Dispatch};
pub use auth::AuthConfig;
pub use durable::{DurableAccess, DurableConfig};
pub use features::FeaturesConfig;
pub use routes::{CanaryConfig, RouteConfig, RouteKind, SseShare};
pub use server::{CertificateConfig, LimitsConfig, LogFormat, ServerConfig, TlsConfig};

/// `[existence_cache]`: the existence cache's policy (from `agentgate-middleware`).
pub use agentgate_middleware::policy::{ExistenceCachePolicy, OnError};
pub use sse::SseConfig;
pub use store::{QuotasConfig, RedisConfig, StoreConfig, StoreKind, SubscribeMode};
pub use telemetry::TelemetryConfig;
pub use tools::{ToolConfig, ToolKind, ToolsConfig};
pub use upstreams::{Balance, HashOn, HealthCheckConfig, UpstreamConfig, UpstreamTlsConfig};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The whole gateway configuration: the root of `agentgate.toml`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[server]`: listen addresses, worker threads, PID file and upgrade socket, request
    /// body limit and shutdown grace.
    pub server: ServerConfig,
    /// `[auth]`: API keys for the session API and the secret that signs stream tokens.
    pub auth: AuthConfig,
    /// `[store]`: where session state and event logs live (memory or Redis), and for how long.
    pub store: StoreConfig,
    /// `[sse]`: Server-Sent Events stream tuning (heartbeats, client retry, replay batching).
    pub sse: SseConfig,
    /// `[agent]`: who drives sessions (the built-in demo agent or external agents).
    pub agent: AgentConfig,
    /// `[[routes]]`: which requests the agent API answers and which are proxied to an
    /// upstream, tried in file order, first match wins (see [`RouteConfig`]). Default `[]`:
    /// the agent API answers every path.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
    /// `[features]`: optimization switches (see [`FeaturesConfig`]).
    pub features: FeaturesConfig,
    /// `[existence_cache]`: how stream connections' session lookups are cached
    /// (`positive_ttl_ms`, `negative_ttl_ms`, `max_entries`, `on_error = "pass" | "unavailable"`).
    /// Used when `features.existence_cache` is on.
    pub existence_cache: ExistenceCachePolicy,
    /// `[upstreams.NAME]`: peer pools that `kind = "upstream"` routes proxy to, by name.
    /// Default: none.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// `[tools]`: tool-batch execution settings and the declared tools, `[tools.NAME]`
    /// (see [`ToolsConfig`]). Default: the documented settings, no tools.
    pub tools: ToolsConfig,
    /// `[telemetry]`: OTLP export of request spans (see [`TelemetryConfig`]). Default: none,
    /// nothing is exported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<TelemetryConfig>,
}
