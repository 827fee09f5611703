//! [`ExistenceCachePolicy`]: the layer's settings, as TOML-friendly data.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{PolicyError, at_least_one};

/// What to do when the existence check itself fails (backend down, timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Let the request through; the service will find out for itself.
    #[default]
    Pass,
    /// Answer `503 Service Unavailable` with `Retry-After: 1`.
    Unavailable,
}

/// Settings of an `ExistenceCacheLayer` (`existence_cache`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExistenceCachePolicy {
    /// How long a "exists" answer is reused, in milliseconds. Default 5000.
    pub positive_ttl_ms: u64,
    /// How long a "does not exist" answer is reused, in milliseconds; 0 never caches a miss
    /// (a key created right after a miss is seen at once). Default 1000.
    pub negative_ttl_ms: u64,
    /// Most keys cached; the oldest entries are evicted beyond it. At least 1.
    /// Default 100000.
    pub max_entries: usize,
    /// What a failed check does. Default `pass`.
    pub on_error: OnError,
}

impl Default for ExistenceCachePolicy {
    fn default() -> Self {
        Self {
            positive_ttl_ms: 5_000,
            negative_ttl_ms: 1_000,
            max_entries: 100_000,
            on_error: OnError::Pass,
        }
    }
}

impl ExistenceCachePolicy {
    /// [`positive_ttl_ms`](Self::positive_ttl_ms) as a [`Duration`].
    pub fn positive_ttl(&self) -> Duration {
        Duration::from_millis(self.positive_ttl_ms)
    }

    /// [`negative_ttl_ms`](Self::negative_ttl_ms) as a [`Duration`].
    pub fn negative_ttl(&self) -> Duration {
        Duration::from_millis(self.negative_ttl_ms)
    }

    /// Checks the settings: `max_entries` at least 1.
    pub fn validate(&self) -> Result<(), PolicyError> {
        at_least_one("max_entries", self.max_entries as u64)
    }
}
