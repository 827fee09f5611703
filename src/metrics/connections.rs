//! The public listeners' connections (`agentgate_connections_open`,
//! `agentgate_connections_accepted_total`, `agentgate_connections_refused_total{reason}`,
//! `agentgate_connection_timeouts_total{reason}`), copied from the listeners'
//! [`ConnectionStats`] at every scrape, and `agentgate_connection_errors_total{reason}` from
//! [`client_noise`](crate::client_noise).

use std::sync::Arc;

use agentgate_proxy::ConnectionStats;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Metrics;

/// The public listeners' connection counts, copied from their [`ConnectionStats`] at every
/// scrape.
#[derive(Debug)]
pub(super) struct ConnectionGauges {
    stats: Arc<ConnectionStats>,
    open: Gauge,
    accepted: Counter,
    refused: Family<ReasonLabel, Counter>,
    timeouts: Family<ReasonLabel, Counter>,
    errors: Family<ReasonLabel, Counter>,
}

/// Labels of the connection refusal and timeout counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

impl ConnectionGauges {
    /// Creates the connection metrics and registers them in `registry`.
    pub(super) fn register(registry: &mut Registry) -> Self {
        let gauges = Self {
            stats: Arc::default(),
            open: Gauge::default(),
            accepted: Counter::default(),
            refused: Family::default(),
            timeouts: Family::default(),
            errors: Family::default(),
        };
        registry.register(
            "connections_open",
            "Client connections open on the public listeners (past the TLS handshake)",
            gauges.open.clone(),
        );
        registry.register(
            "connections_accepted",
            "Client connections accepted on the public listeners",
            gauges.accepted.clone(),
        );
        registry.register(
            "connections_refused",
            "Client connections closed on arrival, by the cap they hit: max_connections or \
             max_connections_per_address ([server.limits])",
            gauges.refused.clone(),
        );
        registry.register(
            "connection_timeouts",
            "Client connections cut by a [server.limits] timeout: head (a request head not \
             received within head_timeout_ms) or write (a response write not taken within \
             write_timeout_ms)",
            gauges.timeouts.clone(),
        );
        registry.register(
            "connection_errors",
            "Client connections that failed in a way the client caused, by reason: \
             tls_handshake (failed or timed out), h2_handshake (closed before the HTTP/2 \
             preface), sni (an IP address or a malformed name sent as SNI); counted instead \
             of logged one line each",
            gauges.errors.clone(),
        );
        gauges
    }

    /// Copies the listeners' counts into the metrics.
    pub(super) fn refresh(&self) {
        let counts = self.stats.counts();
        // Counters only grow: add what the listeners counted since the last scrape.
        let catch_up = |counter: &Counter, total: u64| {
            counter.inc_by(total.saturating_sub(counter.get()));
        };
        self.open
            .set(i64::try_from(counts.open).unwrap_or(i64::MAX));
        catch_up(&self.accepted, counts.accepted);
        for (reason, total) in [
            ("max_connections", counts.refused_total),
            ("max_connections_per_address", counts.refused_per_address),
        ] {
            catch_up(&self.refused.get_or_create(&ReasonLabel { reason }), total);
        }
        for (reason, total) in [
            ("head", counts.head_timeouts),
            ("write", counts.write_timeouts),
        ] {
            catch_up(&self.timeouts.get_or_create(&ReasonLabel { reason }), total);
        }
        for (reason, total) in crate::client_noise::counts() {
            catch_up(&self.errors.get_or_create(&ReasonLabel { reason }), total);
        }
    }
}

impl Metrics {
    /// Where the public listeners count connections held and refused (exported as
    /// `agentgate_connections_*`).
    pub fn connection_stats(&self) -> Arc<ConnectionStats> {
        Arc::clone(&self.connections.stats)
    }
}
