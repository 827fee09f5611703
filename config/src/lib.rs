//! agentgate's configuration: the TOML schema, its defaults, validation, and errors that
//! point at the offending line.
//!
//! # File format
//!
//! One TOML file with these tables, all optional, as are all keys in them:
//!
//! | table                | holds                                                        |
//! |----------------------|--------------------------------------------------------------|
//! | `[server]`           | listen addresses, worker threads, PID file, upgrade socket, request body limit, shutdown grace |
//! | `[auth]`             | API keys and the stream-token signing secret(s)              |
//! | `[store]`            | `kind = "memory"` or `"redis"`, event-log cap, retention, TTL |
//! | `[store.redis]`      | Redis URLs, cluster mode, timeouts (used with `kind = "redis"`) |
//! | `[sse]`              | heartbeat interval, client `retry:`, replay batch size        |
//! | `[agent]`            | `dispatch = "demo"` or `"none"`, and `[agent.demo]` pacing     |
//! | `[[routes]]`         | request routing: host, path prefix, methods → agent API or an upstream; first match wins |
//! | `[upstreams.NAME]`   | a peer pool: peers, balancing, timeouts, retries, `[upstreams.NAME.health_check]` |
//! | `[tools]`            | tool-batch execution: parallelism, timeouts, CPU worker pool, size limits |
//! | `[tools.NAME]`       | a tool agents may call: `kind = "http"` (an upstream), `"sha256"`, `"json_query"`, `"regex_extract"` |
//!
//! Without `[[routes]]` the agent API answers every path; with routes, a request that
//! matches none gets a JSON 404.
//!
//! A key left out takes its default (see each field's docs). An unknown key is an error,
//! so a typo never silently falls back to a default. Durations are plain integers whose
//! unit is in the key's name: `_secs` for seconds, `_ms` for milliseconds.
//!
//! The defaults are safe rather than complete: `auth.api_keys` and
//! `auth.stream_token_secret` have no usable default, so a file must set them.
//! [`REFERENCE_TOML`] is the annotated reference file, a working development setup.
//!
//! # Errors
//!
//! [`Config::from_toml_str`] and [`Config::load`] parse, then [`Config::validate`]. Every
//! [`ConfigError`] names the key and, when the key is in the file, its line and column:
//!
//! ```text
//! line 7, column 1: store.redis.urls[1]: must start with redis:// or rediss://
//! line 31, column 10: upstreams.backend.peers[0]: must be an IP:port address such as "10.0.0.11:8080" (DNS names are not supported)
//! ```
//!
//! # Reloads
//!
//! A reload (SIGHUP) applies a new file whole, except the restart-only keys
//! ([`restart_only_keys`]: listeners, the store, the span exporter, the tool worker pool),
//! which keep their running values until a restart ([`Config::keep_restart_only`]).
//!
//! # Example
//!
//! ```
//! use agentgate_config::{Config, StoreKind};
//!
//! let config = Config::from_toml_str(
//!     r#"
//!     [auth]
//!     api_keys = ["0123456789abcdef"]
//!     stream_token_secret = "0123456789abcdef0123456789abcdef"
//!     "#,
//! )
//! .expect("valid");
//! assert_eq!(config.store.kind, StoreKind::Memory);
//!
//! let errors = Config::from_toml_str("[sse]\nheartbeat_secs = 0\n").expect_err("invalid");
//! let heartbeat = errors
//!     .iter()
//!     .find(|e| e.key.as_deref() == Some("sse.heartbeat_secs"))
//!     .expect("reported");
//! assert_eq!(heartbeat.to_string(), "line 2, column 18: sse.heartbeat_secs: must be at least 1");
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]
#![deny(unsafe_code)]

mod error;
mod load;
mod locate;
mod published;
mod restart;
mod schema;
mod validate;

pub use error::{ConfigError, ValidationError};
pub use published::{GENERATE_HINT, PUBLISHED_CREDENTIALS, is_published};
pub use restart::restart_only_keys;
pub use schema::{
    AgentConfig, AuthConfig, Balance, CanaryConfig, CertificateConfig, Config, DemoConfig,
    Dispatch, DurableAccess, DurableConfig, ExistenceCachePolicy, FeaturesConfig, HashOn,
    HealthCheckConfig, LimitsConfig, LogFormat, OnError, QuotasConfig, RedisConfig, RouteConfig,
    RouteKind, ServerConfig, SseConfig, SseShare, StoreConfig, StoreKind, SubscribeMode,
    TelemetryConfig, TlsConfig, ToolConfig, ToolKind, ToolsConfig, UpstreamConfig,
    UpstreamTlsConfig,
};

/// The annotated reference configuration (`config/agentgate.toml`): in-memory store, demo
/// agent, loopback listener, development credentials that must be changed in production.
pub const REFERENCE_TOML: &str = include_str!("../agentgate.toml");
