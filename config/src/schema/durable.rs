//! `[routes.durable]`: the Durable Streams protocol route's authorisation and bounds.

use serde::{Deserialize, Serialize};

/// Who may do something on a `kind = "durable"` route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DurableAccess {
    /// `"api_key"`: the request carries `Authorization: Bearer <key>` with one of
    /// `[auth] api_keys`; otherwise 401.
    #[default]
    ApiKey,
    /// `"public"`: anyone. For reads of public streams, or a gateway behind its own
    /// authorisation (and the conformance suite, which sends no credentials).
    Public,
}

/// `[routes.durable]` of a `kind = "durable"` route: who may write and read, and the bound
/// on every resource a client can make the gateway hold.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DurableConfig {
    /// Who may create, append to, close and delete streams (`PUT`, `POST`, `DELETE`):
    /// `"api_key"` or `"public"`. Default `"api_key"`.
    pub write: DurableAccess,
    /// Who may read streams (`GET`, `HEAD`; catch-up, long-poll and SSE): `"api_key"` or
    /// `"public"`. Default `"api_key"`.
    pub read: DurableAccess,
    /// Largest body of one `PUT` or `POST`, in bytes (chunked bodies are counted as they
    /// arrive); larger: 413. At least 1. Default 1048576 (1 MiB).
    pub max_append_bytes: u64,
    /// Largest stream, in stored bytes; an append past it: 413. At least 1. Default
    /// 67108864 (64 MiB).
    pub max_stream_bytes: u64,
    /// Most bytes one catch-up or long-poll response carries; the reader continues from its
    /// `Stream-Next-Offset` (the response then has no `Stream-Up-To-Date`). At least 1.
    /// Default 1048576 (1 MiB).
    pub max_read_bytes: u64,
    /// Most streams the route's store holds at once (the memory store counts them; Redis
    /// counts them per route in one key); one more `PUT`: 507. At least 1. Default 100000.
    pub max_streams: u64,
    /// Most idempotent producers remembered per stream; a new producer past it replaces
    /// the one idle longest. At least 1. Default 1024.
    pub max_producers: u64,
    /// How long a long-poll read (`live=long-poll`) waits for data before answering 204.
    /// At least 1. Default 30000.
    pub long_poll_timeout_ms: u64,
    /// How long one SSE response (`live=sse`) lasts before the gateway ends it (the client
    /// reconnects from its offset; §10.2 asks for about 60 s so CDNs can collapse
    /// viewers). At least 1. Default 60000.
    pub sse_max_ms: u64,
    /// Longest `Stream-TTL` accepted, in seconds. At least 1. Default 2592000 (30 days).
    pub max_ttl_secs: u64,
}

impl Default for DurableConfig {
    fn default() -> Self {
        Self {
            write: DurableAccess::ApiKey,
            read: DurableAccess::ApiKey,
            max_append_bytes: 1 << 20,
            max_stream_bytes: 64 << 20,
            max_read_bytes: 1 << 20,
            max_streams: 100_000,
            max_producers: 1024,
            long_poll_timeout_ms: 30_000,
            sse_max_ms: 60_000,
            max_ttl_secs: 30 * 24 * 3600,
        }
    }
}

impl DurableConfig {
    /// `long_poll_timeout_ms` as a duration.
    pub fn long_poll_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.long_poll_timeout_ms)
    }

    /// `sse_max_ms` as a duration.
    pub fn sse_max(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.sse_max_ms)
    }
}
