//! Prometheus metrics of one gateway instance, rendered as text at `GET /metrics`.
//!
//! Each [`Metrics`] owns its registry (nothing global), so several gateways in one process,
//! as in tests, keep separate figures.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::store::StoreStats;

/// Labels of `agentgate_http_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

/// The gateway's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    active_streams: Gauge,
}

impl Metrics {
    /// A registry holding the request and stream metrics plus the store's traffic counters.
    pub fn new(store: &StoreStats) -> Self {
        let mut registry = Registry::with_prefix("agentgate");
        let requests = Family::<RequestLabels, Counter>::default();
        let active_streams = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status",
            requests.clone(),
        );
        registry.register(
            "sse_active_streams",
            "SSE streams currently open",
            active_streams.clone(),
        );
        registry.register(
            "store_round_trips",
            "Round trips to the session store backend (a pipeline or script counts once)",
            store.round_trips.clone(),
        );
        registry.register(
            "store_commands",
            "Commands sent to the session store backend",
            store.commands.clone(),
        );
        Self {
            registry,
            requests,
            active_streams,
        }
    }

    /// Counts one answered request.
    pub fn record_request(&self, route: &'static str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
    }

    /// Marks an SSE stream open until the returned guard is dropped.
    pub fn stream_opened(&self) -> ActiveStream {
        self.active_streams.inc();
        ActiveStream(self.active_streams.clone())
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Keeps `agentgate_sse_active_streams` counted while alive.
#[derive(Debug)]
pub struct ActiveStream(Gauge);

impl Drop for ActiveStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}
