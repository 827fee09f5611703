//! [`FanoutPolicy`]: the fan-out layer's settings, as TOML-friendly data.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{PolicyError, at_least_one};

/// Settings of an `SseFanoutLayer` (`sse::fanout`).
///
/// ```toml
/// replay_ring = 1024       # events kept per shared stream for late joiners
/// subscriber_queue = 256   # frames buffered per subscriber before it is detached
/// linger_ms = 5000         # keep a stream nobody follows this long before dropping it
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FanoutPolicy {
    /// The most recent events each shared stream keeps, so a subscriber joining with a
    /// `Last-Event-ID` among them (or at the stream's start, while nothing was dropped) is
    /// served from memory. At least 1. Default 1024.
    pub replay_ring: usize,
    /// Frames queued per subscriber. A subscriber that falls this far behind is detached
    /// and continues from its own cursor through its own inner call. At least 1.
    /// Default 256.
    pub subscriber_queue: usize,
    /// How long a shared stream with no subscriber is kept before its inner call is
    /// dropped, in milliseconds (a reconnecting client finds it still there). Default 5000.
    pub linger_ms: u64,
}

impl Default for FanoutPolicy {
    fn default() -> Self {
        Self {
            replay_ring: 1024,
            subscriber_queue: 256,
            linger_ms: 5000,
        }
    }
}

impl FanoutPolicy {
    /// Checks the settings: `replay_ring` and `subscriber_queue` at least 1.
    pub fn validate(&self) -> Result<(), PolicyError> {
        at_least_one("replay_ring", self.replay_ring as u64)?;
        at_least_one("subscriber_queue", self.subscriber_queue as u64)
    }

    /// [`linger_ms`](Self::linger_ms) as a [`Duration`].
    pub fn linger(&self) -> Duration {
        Duration::from_millis(self.linger_ms)
    }
}
