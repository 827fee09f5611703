//! [`MultiplexPolicy`]: the SSE multiplex layer's settings.

use serde::{Deserialize, Serialize};

use super::{PolicyError, Problem, at_least_one};

/// The most streams a [`MultiplexPolicy`] lets one request follow (each adds to the
/// resume cursor every frame carries).
pub const MAX_STREAMS: usize = 256;

/// Settings of an `SseMultiplexLayer` (`sse::multiplex`).
///
/// ```toml
/// max_streams = 16      # streams one request may follow
/// heartbeat_ms = 15000  # comment sent on an idle response
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MultiplexPolicy {
    /// Most streams one request may follow (bounds the cursor's size too). 1 to
    /// [`MAX_STREAMS`]. Default 16.
    pub max_streams: usize,
    /// Interval of heartbeat comments on an idle response, in milliseconds. At least 1.
    /// Default 15000.
    pub heartbeat_ms: u64,
}

impl Default for MultiplexPolicy {
    fn default() -> Self {
        Self {
            max_streams: 16,
            heartbeat_ms: 15_000,
        }
    }
}

impl MultiplexPolicy {
    /// Checks the settings: `max_streams` from 1 to [`MAX_STREAMS`], `heartbeat_ms` at
    /// least 1.
    pub fn validate(&self) -> Result<(), PolicyError> {
        at_least_one("max_streams", self.max_streams as u64)?;
        if self.max_streams > MAX_STREAMS {
            return Err(PolicyError::new(
                "max_streams",
                Problem::AboveMax {
                    value: self.max_streams as u64,
                    max: MAX_STREAMS as u64,
                },
            ));
        }
        at_least_one("heartbeat_ms", self.heartbeat_ms)
    }
}
