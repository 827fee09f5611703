//! Prometheus metrics of one gateway instance, rendered as text at `GET /metrics`.
//!
//! Each [`Metrics`] owns its registry (nothing global), so several gateways in one process,
//! as in tests, keep separate figures.
//!
//! Besides the registry, [`Metrics::live`] gives running totals and a latency window for the
//! admin listener's live status page (`crate::admin::live`).

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use agentgate_middleware::priority_queue::{OverloadReason, QueueObserver};
use agentgate_middleware::rate_limit::BucketStats;
use agentgate_middleware::sse::fanout::FanoutStats;
use agentgate_proxy::{ConnectionStats, UpstreamGroup};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::store::StoreStats;

/// Labels of `agentgate_http_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

/// Labels of the priority queue's depth and wait metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    route: String,
    priority: u8,
}

/// Why a queued request was shed, as a label value.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum ShedReason {
    queue_full,
    evicted,
    timed_out,
}

/// Labels of `agentgate_queue_shed_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShedLabels {
    route: String,
    priority: u8,
    reason: ShedReason,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// 0.25 ms to ~8 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// 1 ms to ~16 s, doubling.
fn wait_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The gateway's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    active_streams: Gauge,
    queue: QueueFamilies,
    tools: ToolMetrics,
    fanout: FanoutGauges,
    rate_limited: Family<RouteLabel, Counter>,
    rate_limit_keys: RateLimitKeyMetrics,
    durations: HistogramFamily<HandlerLabel>,
    process: ProcessMetrics,
    upstreams: UpstreamGauges,
    reloads: Family<ReloadLabel, Counter>,
    store: StoreStats,
    totals: LiveTotals,
    connections: ConnectionGauges,
}

/// The public listeners' connection counts, copied from their [`ConnectionStats`] at every
/// scrape.
#[derive(Debug)]
struct ConnectionGauges {
    stats: Arc<ConnectionStats>,
    open: Gauge,
    accepted: Counter,
    refused: Family<ReasonLabel, Counter>,
    timeouts: Family<ReasonLabel, Counter>,
}

/// Labels of the connection refusal and timeout counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

impl ConnectionGauges {
    fn register(registry: &mut Registry) -> Self {
        let gauges = Self {
            stats: Arc::default(),
            open: Gauge::default(),
            accepted: Counter::default(),
            refused: Family::default(),
            timeouts: Family::default(),
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
        gauges
    }

    fn refresh(&self) {
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
    }
}

/// Labels of `agentgate_config_reloads_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabel {
    result: &'static str,
}

/// Running totals the registry's labelled families cannot sum cheaply, and the latency
/// window, for the live status page.
#[derive(Debug)]
struct LiveTotals {
    /// Agent API requests answered.
    requests: Counter,
    /// Requests shed by any priority queue.
    shed: Counter,
    /// Every route's rate-limit rejection counter.
    rejections: Mutex<Vec<Counter>>,
    /// Handler latencies (time to response head) since the last [`Metrics::take_latencies`],
    /// in microseconds.
    /// (`None` only if the histogram could not be set up: the window then stays empty.)
    latencies: Mutex<Option<hdrhistogram::Histogram<u64>>>,
    /// Whether latencies go to the window: only while someone watches the live feed, so the
    /// request path pays for it (a lock and a record) only then.
    windowing: std::sync::atomic::AtomicBool,
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

/// Healthy and total peers per upstream group, read from the groups at each scrape.
#[derive(Debug, Default)]
struct UpstreamGauges {
    groups: Mutex<Vec<Arc<UpstreamGroup>>>,
    healthy: Family<UpstreamLabel, Gauge>,
    peers: Family<UpstreamLabel, Gauge>,
}

/// Labels of the upstream gauges.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabel {
    upstream: String,
}

impl UpstreamGauges {
    fn register(registry: &mut Registry) -> Self {
        let gauges = Self::default();
        registry.register(
            "upstream_healthy_peers",
            "Peers of an upstream group that pass their health check, by group",
            gauges.healthy.clone(),
        );
        registry.register(
            "upstream_peers",
            "Peers of an upstream group, by group",
            gauges.peers.clone(),
        );
        gauges
    }

    fn refresh(&self) {
        let groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        for group in groups.iter() {
            let (healthy, peers) = group.peer_health();
            let label = UpstreamLabel {
                upstream: group.name().to_owned(),
            };
            let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
            self.healthy.get_or_create(&label).set(count(healthy));
            self.peers.get_or_create(&label).set(count(peers));
        }
    }
}

/// Keys held and evicted by the routes' local rate limiters, read from them at each scrape.
#[derive(Debug, Default)]
struct RateLimitKeyMetrics {
    /// Each limiter's route, its figures, and the evictions already counted.
    limiters: Mutex<Vec<(RouteLabel, Weak<BucketStats>, u64)>>,
    keys: Family<RouteLabel, Gauge>,
    evictions: Family<RouteLabel, Counter>,
}

impl RateLimitKeyMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "rate_limit_keys",
            "Keys holding a bucket in a route's local rate limiter (at most its max_keys), by \
             route",
            metrics.keys.clone(),
        );
        registry.register(
            "rate_limit_evictions",
            "Keys a route's local rate limiter evicted to stay within max_keys, by route",
            metrics.evictions.clone(),
        );
        metrics
    }

    fn refresh(&self) {
        let mut limiters = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
        // Limiters of a replaced generation are gone once their last request is.
        limiters.retain(|(_, stats, _)| stats.strong_count() > 0);
        self.keys.clear();
        for (route, stats, counted) in limiters.iter_mut() {
            let Some(stats) = stats.upgrade() else {
                continue;
            };
            let keys = i64::try_from(stats.keys()).unwrap_or(i64::MAX);
            self.keys.get_or_create(route).inc_by(keys);
            let evicted = stats.evicted();
            self.evictions
                .get_or_create(route)
                .inc_by(evicted.saturating_sub(*counted));
            *counted = evicted;
        }
    }
}

/// Labels of `agentgate_http_request_duration_seconds`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandlerLabel {
    route: &'static str,
}

/// The process's CPU time and resident memory, read from `/proc/self` at each scrape.
#[derive(Debug, Default)]
struct ProcessMetrics {
    cpu: Counter<f64, std::sync::atomic::AtomicU64>,
    resident: Gauge,
    /// CPU seconds already counted, so the counter only moves forward.
    counted: std::sync::Mutex<f64>,
}

impl ProcessMetrics {
    fn register(registry: &mut Registry) -> Self {
        let process = Self::default();
        registry.register(
            "process_cpu_seconds",
            "User and system CPU time of the gateway process (Linux /proc/self/stat)",
            process.cpu.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the gateway process (Linux /proc/self/status VmRSS)",
            process.resident.clone(),
        );
        process
    }

    fn refresh(&self) {
        if let Some(seconds) = cpu_seconds() {
            let mut counted = self.counted.lock().unwrap_or_else(|e| e.into_inner());
            if seconds > *counted {
                self.cpu.inc_by(seconds - *counted);
                *counted = seconds;
            }
        }
        if let Some(bytes) = resident_bytes() {
            self.resident.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }
}

/// utime + stime of this process, in seconds (fields 14 and 15 of `/proc/self/stat`, in
/// clock ticks of 1/100 s, the fixed USER_HZ of Linux's proc interface).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may contain spaces; fields are counted after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// VmRSS of this process, in bytes.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Labels of per-route counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

/// The SSE fan-out layer's counters, copied from its [`FanoutStats`] at every scrape.
#[derive(Debug, Default)]
struct FanoutGauges {
    /// The fan-out layers of every generation still serving (a reload leaves the old
    /// one running for its open streams), summed.
    stats: Mutex<Vec<Weak<FanoutStats>>>,
    streams: Gauge,
    subscribers: Gauge,
    inner_calls: Gauge,
    detached: Gauge,
    client_streams: Gauge,
    ratio: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl FanoutGauges {
    fn register(registry: &mut Registry) -> Self {
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
    fn refresh(&self, tails: i64) {
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

/// The priority queues' metrics, shared by every route's observer.
#[derive(Debug, Clone)]
struct QueueFamilies {
    depth: Family<QueueLabels, Gauge>,
    wait: HistogramFamily<QueueLabels>,
    shed: Family<ShedLabels, Counter>,
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
        registry.register(
            "store_commands_by_name",
            "Commands sent to the session store backend, by command",
            store.by_command.clone(),
        );
        registry.register(
            "store_connections",
            "Connections the session store holds to its backend (Redis: the multiplexed \
             command connection plus the notification connection while subscribed, however \
             many streams are open; on Cluster each is a handle with a socket per node; \
             memory: 0)",
            store.connections.clone(),
        );
        registry.register(
            "sessions_active",
            "Sessions created and neither completed nor expired. Memory store: every session, \
             exactly. Redis: this node's view, the sessions created through this node until \
             completed through it or idle past the session TTL (sum over nodes for a total)",
            store.live_sessions.clone(),
        );
        registry.register(
            "session_memory_bytes",
            "Estimated bytes the store spends per session. Memory store: the data each held \
             session keeps (strings, events) plus fixed structure sizes, averaged, a lower \
             bound. Redis: MEMORY USAGE of the meta hash plus the event stream, averaged over \
             up to 8 live sessions sampled every 5 s",
            store.session_memory_bytes.clone(),
        );
        registry.register(
            "session_duration_seconds",
            "End-to-end session time, from creation (the store's created_at) to completion, \
             observed when a session completes through this gateway",
            store.session_duration.clone(),
        );
        let queue = QueueFamilies {
            depth: Family::default(),
            wait: HistogramFamily::new_with_constructor(wait_histogram),
            shed: Family::default(),
        };
        registry.register(
            "queue_depth",
            "Requests waiting in a route's priority queue, by route and priority",
            queue.depth.clone(),
        );
        registry.register(
            "queue_wait_seconds",
            "Time queued requests waited for a slot, by route and priority",
            queue.wait.clone(),
        );
        registry.register(
            "queue_shed",
            "Requests a priority queue turned away with 503, by route, priority and reason",
            queue.shed.clone(),
        );
        let tools = ToolMetrics::register(&mut registry);
        let fanout = FanoutGauges::register(&mut registry);
        let durations =
            HistogramFamily::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time from request to response head, by agent API handler (init: time to first \
             byte; stream: SSE connection establishment)",
            durations.clone(),
        );
        let process = ProcessMetrics::register(&mut registry);
        let upstreams = UpstreamGauges::register(&mut registry);
        let rate_limited = Family::<RouteLabel, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests a route's rate limit answered with 429, by route",
            rate_limited.clone(),
        );
        let rate_limit_keys = RateLimitKeyMetrics::register(&mut registry);
        let reloads = Family::<ReloadLabel, Counter>::default();
        // Both series exist from the start (at 0), so rules can use them before a reload.
        for result in ["applied", "rejected"] {
            let _ = reloads.get_or_create(&ReloadLabel { result });
        }
        registry.register(
            "config_reloads",
            "Configuration reloads (SIGHUP), by result: applied, or rejected (the running \
             configuration kept serving)",
            reloads.clone(),
        );
        let connections = ConnectionGauges::register(&mut registry);
        Self {
            connections,
            registry,
            requests,
            active_streams,
            queue,
            tools,
            fanout,
            rate_limited,
            rate_limit_keys,
            durations,
            process,
            upstreams,
            reloads,
            store: store.clone(),
            totals: LiveTotals {
                requests: Counter::default(),
                shed: Counter::default(),
                rejections: Mutex::default(),
                latencies: Mutex::new(latency_window()),
                windowing: std::sync::atomic::AtomicBool::new(false),
            },
        }
    }

    /// Counts a configuration reload, `applied` or rejected.
    pub fn config_reload(&self, applied: bool) {
        let result = if applied { "applied" } else { "rejected" };
        self.reloads.get_or_create(&ReloadLabel { result }).inc();
    }

    /// Totals and gauges for the live status page (fan-out figures refreshed now).
    pub fn live(&self) -> LiveFigures {
        let tails = self.active_streams.get();
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
        self.totals
            .windowing
            .store(on, std::sync::atomic::Ordering::Relaxed);
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

    /// The counter of `route`'s rate-limit rejections (`agentgate_rate_limited_total`).
    pub fn rate_limit_rejections(&self, route: &str) -> Counter {
        let counter = self
            .rate_limited
            .get_or_create(&RouteLabel {
                route: route.to_owned(),
            })
            .clone();
        let mut all = self
            .totals
            .rejections
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        all.push(counter.clone());
        counter
    }

    /// Reports the key count and evictions of `route`'s local rate limiter
    /// (`agentgate_rate_limit_keys`, `agentgate_rate_limit_evictions_total`) while it lives.
    pub fn watch_rate_limit_keys(&self, route: &str, stats: &Arc<BucketStats>) {
        let label = RouteLabel {
            route: route.to_owned(),
        };
        let mut limiters = self
            .rate_limit_keys
            .limiters
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        limiters.push((label, Arc::downgrade(stats), 0));
    }

    /// The observer of `route`'s priority queue, feeding `agentgate_queue_*`.
    pub fn queue_observer(&self, route: &str) -> QueueMetrics {
        QueueMetrics {
            route: route.to_owned(),
            families: self.queue.clone(),
            shed_total: self.totals.shed.clone(),
        }
    }

    /// Records how long a handler took to produce its response head.
    pub fn record_duration(&self, route: &'static str, took: Duration) {
        self.durations
            .get_or_create(&HandlerLabel { route })
            .observe(took.as_secs_f64());
        if !self
            .totals
            .windowing
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let mut window = self
            .totals
            .latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(window) = window.as_mut() {
            window.saturating_record(micros.max(1));
        }
    }

    /// Counts one answered request.
    pub fn record_request(&self, route: &'static str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
        self.totals.requests.inc();
    }

    /// Marks an SSE stream open until the returned guard is dropped.
    pub fn stream_opened(&self) -> ActiveStream {
        self.active_streams.inc();
        ActiveStream(self.active_streams.clone())
    }

    /// The tool executor's metrics.
    pub fn tools(&self) -> &ToolMetrics {
        &self.tools
    }

    /// Reports the health of `groups` (`agentgate_upstream_healthy_peers`,
    /// `agentgate_upstream_peers`) from now on.
    pub fn watch_upstreams(&self, groups: Vec<Arc<UpstreamGroup>>) {
        // A reload replaces the groups: drop the series of groups that are gone.
        self.upstreams.healthy.clear();
        self.upstreams.peers.clear();
        *self
            .upstreams
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = groups;
    }

    /// Reports the SSE fan-out layer's counters (`agentgate_sse_fanout_*`) from now on.
    pub fn watch_fanout(&self, stats: &Arc<FanoutStats>) {
        let mut watched = self.fanout.stats.lock().unwrap_or_else(|e| e.into_inner());
        watched.retain(|s| s.strong_count() > 0);
        watched.push(Arc::downgrade(stats));
    }

    /// Where the public listeners count connections held and refused (exported as
    /// `agentgate_connections_*`).
    pub fn connection_stats(&self) -> Arc<ConnectionStats> {
        Arc::clone(&self.connections.stats)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.connections.refresh();
        self.fanout.refresh(self.active_streams.get());
        self.process.refresh();
        self.upstreams.refresh();
        self.rate_limit_keys.refresh();
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

/// Feeds one route's priority-queue events into `agentgate_queue_depth`,
/// `agentgate_queue_wait_seconds` and `agentgate_queue_shed_total`.
#[derive(Debug)]
pub struct QueueMetrics {
    route: String,
    families: QueueFamilies,
    /// Sheds of every route (for the live status page).
    shed_total: Counter,
}

impl QueueMetrics {
    fn labels(&self, priority: u8) -> QueueLabels {
        QueueLabels {
            route: self.route.clone(),
            priority,
        }
    }
}

impl QueueObserver for QueueMetrics {
    fn depth(&self, priority: u8, delta: i64) {
        self.families
            .depth
            .get_or_create(&self.labels(priority))
            .inc_by(delta);
    }

    fn waited(&self, priority: u8, waited: Duration) {
        self.families
            .wait
            .get_or_create(&self.labels(priority))
            .observe(waited.as_secs_f64());
    }

    fn shed(&self, priority: u8, reason: OverloadReason) {
        let reason = match reason {
            OverloadReason::QueueFull => ShedReason::queue_full,
            OverloadReason::Evicted => ShedReason::evicted,
            OverloadReason::TimedOut => ShedReason::timed_out,
        };
        let labels = ShedLabels {
            route: self.route.clone(),
            priority,
            reason,
        };
        self.families.shed.get_or_create(&labels).inc();
        self.shed_total.inc();
    }
}

/// Labels of the tool metrics: the tool's registered name and how the call ended
/// (`succeeded`, `failed`, `timed_out`, `skipped`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabels {
    tool: String,
    status: &'static str,
}

/// Metrics of tool execution. Cheap to clone: clones update the same series.
#[derive(Debug, Clone)]
pub struct ToolMetrics {
    duration: Family<ToolLabels, Histogram, fn() -> Histogram>,
    executions: Family<ToolLabels, Counter>,
    queue_depth: Gauge,
}

impl ToolMetrics {
    /// Creates the tool metrics and registers them in `registry`.
    fn register(registry: &mut Registry) -> Self {
        let duration = Family::<ToolLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            // 0.5 ms to about 16 s
            || Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
        );
        let executions = Family::<ToolLabels, Counter>::default();
        let queue_depth = Gauge::default();
        registry.register(
            "tool_duration_seconds",
            "Duration of tool calls that ran, by tool and status",
            duration.clone(),
        );
        registry.register(
            "tool_executions",
            "Tool calls settled, by tool and status (skipped: a dependency failed)",
            executions.clone(),
        );
        registry.register(
            "tool_pool_queue_depth",
            "Jobs waiting for a thread of the CPU worker pool",
            queue_depth.clone(),
        );
        Self {
            duration,
            executions,
            queue_depth,
        }
    }

    /// Counts a settled call; `duration` is `None` for a call that never ran (skipped).
    pub fn record(&self, tool: &str, status: &'static str, duration: Option<std::time::Duration>) {
        let labels = ToolLabels {
            tool: tool.to_owned(),
            status,
        };
        if let Some(duration) = duration {
            self.duration
                .get_or_create(&labels)
                .observe(duration.as_secs_f64());
        }
        self.executions.get_or_create(&labels).inc();
    }

    /// The worker pool's queue depth gauge, for the pool to keep current.
    pub fn queue_depth(&self) -> Gauge {
        self.queue_depth.clone()
    }
}
