use std::time::Duration;

use agentgate_middleware::policy::FanoutPolicy;
use agentgate_middleware::policy::MultiplexPolicy;
use serde::{Deserialize, Serialize};

/// `[sse]`: Server-Sent Events stream tuning.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SseConfig {
    /// Interval between heartbeat comments on an idle stream, in seconds; keeps proxies and
    /// load balancers from closing it. At least 1. Default 15.
    pub heartbeat_secs: u64,
    /// Reconnect delay suggested to clients, in milliseconds, sent as the SSE `retry:` field.
    /// At least 1. Default 2_000.
    pub retry_ms: u64,
    /// Events read per store call while replaying history to a (re)connecting client.
    /// 1..=10_000. Default 256.
    pub replay_batch: usize,
    /// `[sse.fanout]`: how concurrent viewers of one session share one store tail (with
    /// `features.sse_fanout`).
    pub fanout: FanoutPolicy,
    /// `[sse.multiplex]`: `GET /v2/stream?sessions=a,b,c`, many sessions on one connection.
    pub multiplex: MultiplexPolicy,
}

impl Default for SseConfig {
    fn default() -> Self {
        Self {
            heartbeat_secs: 15,
            retry_ms: 2_000,
            replay_batch: 256,
            fanout: FanoutPolicy::default(),
            multiplex: MultiplexPolicy::default(),
        }
    }
}

impl SseConfig {
    /// [`heartbeat_secs`](Self::heartbeat_secs) as a [`Duration`].
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_secs)
    }

    /// [`retry_ms`](Self::retry_ms) as a [`Duration`].
    pub fn retry(&self) -> Duration {
        Duration::from_millis(self.retry_ms)
    }
}
