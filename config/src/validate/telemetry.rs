//! `[telemetry]`: the OTLP collector and sampling.

use super::Problems;
use crate::schema::Config;

impl Config {
    pub(super) fn check_telemetry(&self, p: &mut Problems) {
        let Some(t) = &self.telemetry else {
            return;
        };
        if t.otlp_endpoint.is_empty() {
            p.push(
                "telemetry.otlp_endpoint",
                "is required, e.g. \"http://127.0.0.1:4318/v1/traces\"",
            );
        } else {
            let host = t
                .otlp_endpoint
                .strip_prefix("http://")
                .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or_default());
            let ok = host.is_some_and(|h| !h.is_empty())
                && !t
                    .otlp_endpoint
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control());
            p.require(
                ok,
                "telemetry.otlp_endpoint",
                "must be an http:// URL with a host, e.g. \"http://127.0.0.1:4318/v1/traces\"",
            );
        }
        p.require(
            !t.service_name.trim().is_empty(),
            "telemetry.service_name",
            "must not be empty",
        );
        p.require(
            (0.0..=1.0).contains(&t.sample_ratio),
            "telemetry.sample_ratio",
            "must be between 0.0 and 1.0",
        );
        for (key, ms) in [
            ("telemetry.export_timeout_ms", t.export_timeout_ms),
            ("telemetry.batch_delay_ms", t.batch_delay_ms),
        ] {
            p.require(
                (1..=60_000).contains(&ms),
                key,
                "must be between 1 and 60000",
            );
        }
    }
}
