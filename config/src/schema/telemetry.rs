use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[telemetry]`: export every request's span over OTLP/HTTP (protobuf) to an OpenTelemetry
/// collector. Needs a gateway built with the `otlp` cargo feature; without it a
/// `[telemetry]` section is an error. Leave the section out to export nothing (W3C
/// `traceparent` propagation works either way).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP traces URL, path included, plain `http://` (run a local
    /// collector or agent for TLS), e.g. `"http://127.0.0.1:4318/v1/traces"`. Required.
    pub otlp_endpoint: String,
    /// The `service.name` resource attribute of every span. Default `"agentgate"`.
    pub service_name: String,
    /// Fraction of new traces recorded and exported, 0.0..=1.0. A request that joins a
    /// caller's trace follows the caller's `sampled` flag instead. Default 1.0.
    pub sample_ratio: f64,
    /// How long one export request may take before it is abandoned (its spans are lost),
    /// in milliseconds. 1..=60_000. Default 10_000.
    pub export_timeout_ms: u64,
    /// How long finished spans wait to be sent in one batch, in milliseconds. 1..=60_000.
    /// Default 5_000.
    pub batch_delay_ms: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            service_name: "agentgate".to_owned(),
            sample_ratio: 1.0,
            export_timeout_ms: 10_000,
            batch_delay_ms: 5_000,
        }
    }
}

impl TelemetryConfig {
    /// [`export_timeout_ms`](Self::export_timeout_ms) as a [`Duration`].
    pub fn export_timeout(&self) -> Duration {
        Duration::from_millis(self.export_timeout_ms)
    }

    /// [`batch_delay_ms`](Self::batch_delay_ms) as a [`Duration`].
    pub fn batch_delay(&self) -> Duration {
        Duration::from_millis(self.batch_delay_ms)
    }
}
