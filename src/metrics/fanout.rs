//! The SSE fan-out layer's figures (`agentgate_sse_fanout_*`) and what is derived from them
//! and the store tails: client streams (`agentgate_sse_client_streams`) and the fan-out
//! ratio (`agentgate_sse_fanout_ratio`), copied from the layers' [`FanoutStats`] at every
//! scrape.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, Weak};

use agentgate_middleware::sse::fanout::FanoutStats;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Metrics;

/// The SSE fan-out layer's counters, copied from its [`FanoutStats`] at every scrape.
#[derive(Debug, Default)]
pub(super) struct FanoutGauges {
    /// The fan-out layers of every generation still serving (a reload leaves the old
    /// one running for its open streams), summed.
    stats: Mutex<Vec<Weak<FanoutStats>>>,
    streams: Gauge,
    subscribers: Gauge,
    inner_calls: Gauge,
    detached: Gauge,
    pub(super) client_streams: Gauge,
    ratio: Gauge<f64, AtomicU64>,
}

impl FanoutGauges {
    /// Creates the fan-out gauges and registers them in `registry`.
    pub(super) fn register(registry: &mut Registry) -> Self {
        let gauges = Self::default();
        registry.register(
            "sse_fanout_streams",
            "Shared SSE streams open (one store tail each)",
            gauges.streams.clone(),
        );
        registry.register(
            "sse_fanout_subscribers",
            "Viewers attached to shared SSE streams",
            gauges.subscribers.clone(),
        );
        registry.register(
            "sse_fanout_inner_calls",
            "Stream handler calls made by the fan-out layer so far (shared streams started, \
             plus viewers reading alone: old cursors, detached slow viewers)",
            gauges.inner_calls.clone(),
        );
        registry.register(
            "sse_fanout_detached",
            "Slow viewers detached from a shared stream so far (they continue alone)",
            gauges.detached.clone(),
        );
        registry.register(
            "sse_client_streams",
            "SSE streams clients hold open to the agent API: viewers of shared streams plus \
             streams reading alone (each session of a multiplexed connection counts once)",
            gauges.client_streams.clone(),
        );
        registry.register(
            "sse_fanout_ratio",
            "SSE client streams per store tail (sse_client_streams / sse_active_streams; 1 \
             without fan-out, 0 when no stream is open)",
            gauges.ratio.clone(),
        );
        gauges
    }

    /// Copies the fan-out counters and derives client streams and the fan-out ratio from
    /// them and `tails`, the streams reading the store now (`agentgate_sse_active_streams`).
    pub(super) fn refresh(&self, tails: i64) {
        let (mut streams, mut subscribers, mut inner_calls, mut detached) = (0, 0, 0, 0);
        for stats in self
            .stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
        {
            let (s, v, _joined, i, d) = stats.snapshot();
            (streams, subscribers, inner_calls, detached) =
                (streams + s, subscribers + v, inner_calls + i, detached + d);
        }
        let count = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        self.streams.set(count(streams));
        self.subscribers.set(count(subscribers));
        self.inner_calls.set(count(inner_calls));
        self.detached.set(count(detached));
        // A shared stream is one tail serving its subscribers; every other tail (fan-out
        // off, old cursors, detached viewers) serves one client stream.
        let alone = (tails - count(streams)).max(0);
        let clients = count(subscribers).saturating_add(alone);
        self.client_streams.set(clients);
        #[allow(clippy::cast_precision_loss)] // stream counts are far below 2^52
        self.ratio.set(if tails > 0 {
            clients as f64 / tails as f64
        } else {
            0.0
        });
    }
}

impl Metrics {
    /// Reports the SSE fan-out layer's counters (`agentgate_sse_fanout_*`) from now on.
    pub fn watch_fanout(&self, stats: &Arc<FanoutStats>) {
        let mut watched = self.fanout.stats.lock().unwrap_or_else(|e| e.into_inner());
        watched.retain(|s| s.strong_count() > 0);
        watched.push(Arc::downgrade(stats));
    }
}
