//! Figures for the admin listener's live status page (`crate::admin::live`): running totals
//! the registry's labelled families cannot sum cheaply, and a window of handler latencies
//! recorded only while someone watches.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

use super::Metrics;
use super::process::resident_bytes;

/// Running totals the registry's labelled families cannot sum cheaply, and the latency
/// window, for the live status page.
#[derive(Debug)]
pub(super) struct LiveTotals {
    /// Agent API requests answered.
    pub(super) requests: Counter,
    /// Requests shed by any priority queue.
    pub(super) shed: Counter,
    /// Every route's rate-limit rejection counter.
    pub(super) rejections: Mutex<Vec<Counter>>,
    /// Handler latencies (time to response head) since the last [`Metrics::take_latencies`],
    /// in microseconds.
    /// (`None` only if the histogram could not be set up: the window then stays empty.)
    latencies: Mutex<Option<hdrhistogram::Histogram<u64>>>,
    /// Whether latencies go to the window: only while someone watches the live feed, so the
    /// request path pays for it (a lock and a record) only then.
    windowing: AtomicBool,
}

impl LiveTotals {
    /// Zero totals, an empty window, not recording.
    pub(super) fn new() -> Self {
        Self {
            requests: Counter::default(),
            shed: Counter::default(),
            rejections: Mutex::default(),
            latencies: Mutex::new(latency_window()),
            windowing: AtomicBool::new(false),
        }
    }

    /// Adds a handler latency to the window, if the window is recording.
    pub(super) fn record_latency(&self, took: Duration) {
        if !self.windowing.load(Ordering::Relaxed) {
            return;
        }
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let mut window = self.latencies.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(window) = window.as_mut() {
            window.saturating_record(micros.max(1));
        }
    }
}

/// Latencies up to an hour, three significant digits.
fn latency_window() -> Option<hdrhistogram::Histogram<u64>> {
    hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3).ok()
}

/// What [`Metrics::live`] reports: totals since start and gauges now.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LiveFigures {
    /// Agent API requests answered so far.
    pub requests: u64,
    /// Commands sent to the session store backend so far.
    pub store_commands: u64,
    /// Round trips to the session store backend so far.
    pub store_round_trips: u64,
    /// Requests shed by priority queues so far.
    pub shed: u64,
    /// Requests rejected by rate limits so far.
    pub rate_limited: u64,
    /// Live sessions now (`agentgate_sessions_active`).
    pub sessions: i64,
    /// SSE streams clients hold open now (`agentgate_sse_client_streams`).
    pub client_streams: i64,
    /// Store tails open now (`agentgate_sse_active_streams`).
    pub tails: i64,
    /// Resident memory of the process, in bytes (0 where `/proc` is unavailable).
    pub resident_bytes: u64,
}

/// Percentiles of the handler latencies in a window, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyWindow {
    /// Latencies recorded.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
}

impl Metrics {
    /// Totals and gauges for the live status page (fan-out figures refreshed now).
    pub fn live(&self) -> LiveFigures {
        let tails = self.http.active_streams.get();
        self.fanout.refresh(tails);
        let rejections = self
            .totals
            .rejections
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        LiveFigures {
            requests: self.totals.requests.get(),
            store_commands: self.store.commands.get(),
            store_round_trips: self.store.round_trips.get(),
            shed: self.totals.shed.get(),
            rate_limited: rejections.iter().map(Counter::get).sum(),
            sessions: self.store.live_sessions.get(),
            client_streams: self.fanout.client_streams.get(),
            tails,
            resident_bytes: resident_bytes().unwrap_or(0),
        }
    }

    /// Starts (`true`) or stops recording handler latencies for [`take_latencies`]
    /// (off by default).
    ///
    /// [`take_latencies`]: Self::take_latencies
    pub fn record_latencies(&self, on: bool) {
        self.totals.windowing.store(on, Ordering::Relaxed);
    }

    /// Percentiles of the handler latencies recorded since the previous call (`None` if
    /// none was), and a fresh window.
    pub fn take_latencies(&self) -> Option<LatencyWindow> {
        let mut guard = self
            .totals
            .latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let window = guard.as_mut().filter(|w| !w.is_empty())?;
        #[allow(clippy::cast_precision_loss)] // microseconds below an hour
        let ms = |q: f64| window.value_at_quantile(q) as f64 / 1000.0;
        let figures = LatencyWindow {
            count: window.len(),
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
        };
        window.reset();
        Some(figures)
    }
}
