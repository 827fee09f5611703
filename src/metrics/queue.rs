//! The priority queues' metrics (`agentgate_queue_depth`, `agentgate_queue_wait_seconds`,
//! `agentgate_queue_shed_total`, by route and priority), fed by one [`QueueMetrics`]
//! observer per route.

use std::time::Duration;

use agentgate_middleware::priority_queue::{OverloadReason, QueueObserver};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::{HistogramFamily, Metrics};

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

/// 1 ms to ~16 s, doubling.
fn wait_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The priority queues' metrics, shared by every route's observer.
#[derive(Debug, Clone)]
pub(super) struct QueueFamilies {
    depth: Family<QueueLabels, Gauge>,
    wait: HistogramFamily<QueueLabels>,
    shed: Family<ShedLabels, Counter>,
}

impl QueueFamilies {
    /// Creates the queue families and registers them in `registry`.
    pub(super) fn register(registry: &mut Registry) -> Self {
        let queue = Self {
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
        queue
    }
}

impl Metrics {
    /// The observer of `route`'s priority queue, feeding `agentgate_queue_*`.
    pub fn queue_observer(&self, route: &str) -> QueueMetrics {
        QueueMetrics {
            route: route.to_owned(),
            families: self.queue.clone(),
            shed_total: self.totals.shed.clone(),
        }
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
