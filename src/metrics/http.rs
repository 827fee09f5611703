//! The agent API's request metrics: requests answered (`agentgate_http_requests_total`),
//! time to response head (`agentgate_http_request_duration_seconds`), SSE streams open
//! (`agentgate_sse_active_streams`, held by an [`ActiveStream`] guard), and gaps told to
//! them (`agentgate_stream_gaps_total`).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::{HistogramFamily, Metrics};

/// Labels of `agentgate_http_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

/// Labels of `agentgate_http_request_duration_seconds`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandlerLabel {
    route: &'static str,
}

/// 0.25 ms to ~8 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// The request families.
#[derive(Debug)]
pub(super) struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    durations: HistogramFamily<HandlerLabel>,
    /// Streams reading the store now (`agentgate_sse_active_streams`).
    pub(super) active_streams: Gauge,
    /// `gap` events sent (`agentgate_stream_gaps_total`).
    gaps: Counter,
}

impl HttpMetrics {
    /// Creates the request families and registers them in `registry`.
    pub(super) fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
            durations: HistogramFamily::new_with_constructor(latency_histogram),
            active_streams: Gauge::default(),
            gaps: Counter::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status",
            metrics.requests.clone(),
        );
        registry.register(
            "sse_active_streams",
            "SSE streams currently open",
            metrics.active_streams.clone(),
        );
        registry.register(
            "stream_gaps",
            "Gaps told to SSE streams: events trimmed (store.events_maxlen) before the stream \
             got them, announced by one gap event each",
            metrics.gaps.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from request to response head, by agent API handler (init: time to first \
             byte; stream: SSE connection establishment)",
            metrics.durations.clone(),
        );
        metrics
    }
}

impl Metrics {
    /// Counts one answered request.
    pub fn record_request(&self, route: &'static str, status: u16) {
        self.http
            .requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
        self.totals.requests.inc();
    }

    /// Records how long a handler took to produce its response head.
    pub fn record_duration(&self, route: &'static str, took: Duration) {
        self.http
            .durations
            .get_or_create(&HandlerLabel { route })
            .observe(took.as_secs_f64());
        self.totals.record_latency(took);
    }

    /// Counts one `gap` event sent on a stream.
    pub fn stream_gap_told(&self) {
        self.http.gaps.inc();
    }

    /// Marks an SSE stream open until the returned guard is dropped.
    pub fn stream_opened(&self) -> ActiveStream {
        self.http.active_streams.inc();
        ActiveStream(self.http.active_streams.clone())
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
