//! The configuration schema: plain serde structs, one file per top-level table.
//!
//! Every struct is `#[serde(default, deny_unknown_fields)]`: any key may be left out (its
//! documented default applies) and a misspelt key is an error instead of being ignored.
//! Durations are plain integers whose unit is in the key's name (`_secs`, `_ms`); each has a
//! helper that returns a [`std::time::Duration`].

mod agent;
mod auth;
mod server;
mod sse;
mod store;

pub use agent::{AgentConfig, DemoConfig, Dispatch};
pub use auth::AuthConfig;
pub use server::ServerConfig;
pub use sse::SseConfig;
pub use store::{RedisConfig, StoreConfig, StoreKind};

use serde::{Deserialize, Serialize};

/// The whole gateway configuration: the root of `agentgate.toml`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[server]`: the HTTP listener, request body limit and shutdown grace.
    pub server: ServerConfig,
    /// `[auth]`: API keys for the session API and the secret that signs stream tokens.
    pub auth: AuthConfig,
    /// `[store]`: where session state and event logs live (memory or Redis), and for how long.
    pub store: StoreConfig,
    /// `[sse]`: Server-Sent Events stream tuning (heartbeats, client retry, replay batching).
    pub sse: SseConfig,
    /// `[agent]`: who drives sessions (the built-in demo agent or external agents).
    pub agent: AgentConfig,
}
