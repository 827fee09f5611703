//! [`PriorityQueuePolicy`]: the layer's settings, as TOML-friendly data.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::PolicyError;

/// Settings of a [`PriorityQueueLayer`](super::PriorityQueueLayer).
///
/// ```toml
/// max_in_flight = 64     # requests running at once (bodies still streaming count)
/// max_queue = 256        # requests waiting for a slot, per budget
/// max_wait_ms = 5000     # longest a request waits before it gets 503
/// default_priority = 1   # priority of requests without x-priority (0..=255, higher first)
/// stream_budget = 0      # separate slots for streams; 0 = streams share max_in_flight
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PriorityQueuePolicy {
    /// Most requests running at once. A request runs from the call of the inner service
    /// until its response body ends or is dropped. Must be at least 1. Default 64.
    pub max_in_flight: usize,
    /// Most requests waiting for a slot, per budget (main and, if any, streams); beyond it
    /// the lowest-priority waiter (or the newcomer) gets `503`. 0 never queues. Default 256.
    pub max_queue: usize,
    /// Longest a request waits for a slot, in milliseconds, before it gets `503`.
    /// Default 5000.
    pub max_wait_ms: u64,
    /// Priority of requests the classifier cannot place (no or invalid `x-priority`).
    /// Higher runs first. Default 1.
    pub default_priority: u8,
    /// Slots for streaming requests (SSE), taken instead of `max_in_flight`, so long-lived
    /// streams cannot starve short requests. 0 means streams share `max_in_flight`.
    /// Default 0.
    pub stream_budget: usize,
}

impl Default for PriorityQueuePolicy {
    fn default() -> Self {
        Self {
            max_in_flight: 64,
            max_queue: 256,
            max_wait_ms: 5_000,
            default_priority: 1,
            stream_budget: 0,
        }
    }
}

impl PriorityQueuePolicy {
    /// [`max_wait_ms`](Self::max_wait_ms) as a [`Duration`].
    pub fn max_wait(&self) -> Duration {
        Duration::from_millis(self.max_wait_ms)
    }

    /// Checks the settings: `max_in_flight` must be at least 1.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.max_in_flight == 0 {
            return Err(PolicyError::Zero("max_in_flight"));
        }
        Ok(())
    }
}
