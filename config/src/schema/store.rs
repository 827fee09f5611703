use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which backend holds session state and event logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// `"memory"`: in-process maps. Nothing survives a restart and replicas do not share
    /// sessions; fine for development and single-instance use.
    #[default]
    Memory,
    /// `"redis"`: Redis hashes and streams, configured by [`RedisConfig`]; shared by all
    /// gateway replicas.
    Redis,
}

/// How a gateway node learns of the writes to the sessions its readers follow
/// (`store.redis.subscribe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscribeMode {
    /// `"per_session"`: a node subscribes to a session's channel while it has readers of it
    /// (on Cluster sharded pub/sub, `SSUBSCRIBE`/`SPUBLISH`, Redis 7 or newer, so a write's
    /// notification reaches only the shard owning the session and the nodes that follow it).
    #[default]
    PerSession,
    /// `"pattern"`: every node pattern-subscribes to every session's channel and drops what
    /// it has no reader for (each write reaches every node; on Cluster, every Redis node
    /// too). The baseline `bench/cluster.sh` compares against; works with Redis 6.
    Pattern,
}

/// `[store]`: the session store and how long data is kept.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Backend: `"memory"` or `"redis"`. Default `"memory"`.
    pub kind: StoreKind,
    /// Cap on each session's event log, in events. Trimming is approximate (Redis
    /// `XADD MAXLEN ~`): at least this many of the newest events are kept, and a client that
    /// resumes from an older event is told the gap (an SSE `gap` event naming the trimmed
    /// range), then gets what is left. At least 1. Default 10_000.
    pub events_maxlen: u64,
    /// How long a completed session (state and events) stays readable and replayable after it
    /// completes, in seconds. At least 1. Default 3_600 (one hour).
    pub retention_secs: u64,
    /// An unfinished session expires after this long without a write, in seconds; every write
    /// refreshes it. At least 1. Default 86_400 (one day).
    pub session_ttl_secs: u64,
    /// `[store.redis]`: connection settings, used only when `kind = "redis"`.
    pub redis: RedisConfig,
    /// `[store.quotas]`: what one API key and one session may hold (see [`QuotasConfig`]).
    pub quotas: QuotasConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: StoreKind::Memory,
            events_maxlen: 10_000,
            retention_secs: 3_600,
            session_ttl_secs: 86_400,
            redis: RedisConfig::default(),
            quotas: QuotasConfig::default(),
        }
    }
}

impl StoreConfig {
    /// [`retention_secs`](Self::retention_secs) as a [`Duration`].
    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.retention_secs)
    }

    /// [`session_ttl_secs`](Self::session_ttl_secs) as a [`Duration`].
    pub fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.session_ttl_secs)
    }
}

/// `[store.redis]`: how to reach Redis when `store.kind = "redis"`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Redis URLs, `redis://` or `rediss://` (TLS), e.g. `"redis://:password@host:6379/0"`.
    /// Standalone (`cluster = false`) takes exactly one; cluster takes one or more seed nodes;
    /// with `sentinel_master` they are the Sentinels (one or more, each URL with the
    /// Sentinel's own credentials). Default `["redis://127.0.0.1:6379"]`.
    pub urls: Vec<String>,
    /// Connect in Redis Cluster mode, treating `urls` as seed nodes. Default `false`.
    pub cluster: bool,
    /// Redis Sentinel: the name of the master (`sentinel monitor <name> ...`) the Sentinels
    /// at `urls` watch. The store writes to the master they name and follows it by itself
    /// after a failover; meanwhile writes answer 503 with `Retry-After`. Not with
    /// `cluster = true`. Default: none (no Sentinel).
    pub sentinel_master: Option<String>,
    /// With `sentinel_master`: the password (`requirepass`) of the master and its replicas.
    /// Default: none.
    pub sentinel_master_password: Option<String>,
    /// Durable acknowledgement: a write (init, append, complete) is acknowledged only once
    /// this many replicas confirm they hold it (Redis `WAIT`, sent in the same round trip as
    /// the write). When fewer confirm within `ack_timeout_ms` the API answers 503
    /// `replicas_unconfirmed` with `Retry-After`; the write may have been applied all the
    /// same, so a retry may repeat it. Standalone or Sentinel only, with
    /// `features.pipelining = true`. Default 0 (acknowledge once the master has the write).
    pub ack_replicas: u32,
    /// With `ack_replicas`: how long a write waits for the replicas, in milliseconds. Less
    /// than `timeout_ms`. Default 500.
    pub ack_timeout_ms: u64,
    /// Deadline for one store call, in milliseconds; a call that takes longer fails and the
    /// API answers 503 with `Retry-After`. At least 1. Default 2_000.
    pub timeout_ms: u64,
    /// Deadline for establishing a connection, in milliseconds. At least 1. Default 1_000.
    pub connect_timeout_ms: u64,
    /// How nodes hear of writes: `"per_session"` (subscribe to the sessions this node has
    /// readers for; on Cluster sharded pub/sub, Redis 7 or newer) or `"pattern"` (every
    /// node hears every write). Default `"per_session"`.
    pub subscribe: SubscribeMode,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            urls: vec!["redis://127.0.0.1:6379".to_owned()],
            cluster: false,
            sentinel_master: None,
            sentinel_master_password: None,
            ack_replicas: 0,
            ack_timeout_ms: 500,
            timeout_ms: 2_000,
            connect_timeout_ms: 1_000,
            subscribe: SubscribeMode::PerSession,
        }
    }
}

impl RedisConfig {
    /// [`timeout_ms`](Self::timeout_ms) as a [`Duration`].
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// [`ack_timeout_ms`](Self::ack_timeout_ms) as a [`Duration`].
    pub fn ack_timeout(&self) -> Duration {
        Duration::from_millis(self.ack_timeout_ms)
    }

    /// [`connect_timeout_ms`](Self::connect_timeout_ms) as a [`Duration`].
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

/// `[store.quotas]`: per-key and per-session caps, enforced by the store inside the same
/// atomic write that creates a session or appends to it (nothing is half-written when one
/// refuses). There is no "unlimited": set a large value instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotasConfig {
    /// Running sessions one API key may hold at once: init beyond it answers 429
    /// `session_quota_exceeded` (no `Retry-After`: waiting does not help, completing a
    /// session does). A session stops counting when it completes or expires
    /// (`session_ttl_secs` after its last write). At least 1. Default 1_000.
    pub max_active_sessions_per_key: u64,
    /// Bytes of events one session may be appended over its life (each event's `kind` plus
    /// its compact JSON `data`): an append that would pass it answers 413
    /// `session_bytes_exceeded` and writes none of its batch. Events trimmed by
    /// `events_maxlen` still count (trimming gives no budget back). The `complete` event is
    /// not counted, so a session at its cap can still complete. At least 1.
    /// Default 16_777_216 (16 MiB).
    pub max_session_bytes: u64,
}

impl Default for QuotasConfig {
    fn default() -> Self {
        Self {
            max_active_sessions_per_key: 1_000,
            max_session_bytes: 16 * 1024 * 1024,
        }
    }
}
