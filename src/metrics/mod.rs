//! Prometheus metrics of one gateway instance, rendered as text at `GET /metrics`.
//!
//! Each [`Metrics`] owns its registry (nothing global), so several gateways in one process,
//! as in tests, keep separate figures. Every metric is named `agentgate_*`.
//!
//! One file per family or concern; each registers its metrics and adds the [`Metrics`]
//! methods that feed them:
//!
//! - `http`: requests answered, time to response head, SSE streams open;
//! - `store`: the session store's traffic and session figures ([`StoreStats`]);
//! - `queue`: the priority queues ([`QueueMetrics`], one observer per route);
//! - `tools`: tool execution and the CPU worker pool ([`ToolMetrics`]);
//! - `fanout`: the SSE fan-out layer, client streams and the fan-out ratio;
//! - `process`: CPU time and resident memory, parsed from `/proc/self`;
//! - `upstreams`: upstream groups' peer health;
//! - `rate_limit`: rejections, and the local limiters' keys and evictions;
//! - `reload`: configuration reloads;
//! - `connections`: the public listeners' connections;
//! - `live`: running totals and a latency window for the admin listener's live status page
//!   (`crate::admin::live`), see [`Metrics::live`].
//!
//! Figures kept elsewhere (fan-out, upstreams, rate limiters, listeners, `/proc`) are copied
//! in by [`Metrics::render`] at each scrape.

mod connections;
mod fanout;
mod http;
mod live;
mod process;
mod queue;
mod rate_limit;
mod reload;
mod store;
mod tools;
mod upstreams;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub use self::http::ActiveStream;
pub use self::live::{LatencyWindow, LiveFigures};
pub use self::queue::QueueMetrics;
pub use self::tools::ToolMetrics;
use crate::store::StoreStats;

/// A family of histograms whose buckets a constructor sets.
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The gateway's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    http: http::HttpMetrics,
    store: StoreStats,
    queue: queue::QueueFamilies,
    tools: ToolMetrics,
    fanout: fanout::FanoutGauges,
    process: process::ProcessMetrics,
    upstreams: upstreams::UpstreamGauges,
    rate_limits: rate_limit::RateLimitMetrics,
    reloads: reload::ReloadCounter,
    connections: connections::ConnectionGauges,
    totals: live::LiveTotals,
}

impl Metrics {
    /// A registry holding the request and stream metrics plus the store's traffic counters.
    pub fn new(store: &StoreStats) -> Self {
        let mut registry = Registry::with_prefix("agentgate");
        let http = http::HttpMetrics::register(&mut registry);
        store::register(&mut registry, store);
        Self {
            http,
            store: store.clone(),
            queue: queue::QueueFamilies::register(&mut registry),
            tools: ToolMetrics::register(&mut registry),
            fanout: fanout::FanoutGauges::register(&mut registry),
            process: process::ProcessMetrics::register(&mut registry),
            upstreams: upstreams::UpstreamGauges::register(&mut registry),
            rate_limits: rate_limit::RateLimitMetrics::register(&mut registry),
            reloads: reload::ReloadCounter::register(&mut registry),
            connections: connections::ConnectionGauges::register(&mut registry),
            totals: live::LiveTotals::new(),
            registry,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.connections.refresh();
        self.fanout.refresh(self.http.active_streams.get());
        self.process.refresh();
        self.upstreams.refresh();
        self.rate_limits.refresh();
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
