//! The routes' rate limits: rejections (`agentgate_rate_limited_total{route}`), and the keys
//! held and evicted by each local limiter (`agentgate_rate_limit_keys{route}`,
//! `agentgate_rate_limit_evictions_total{route}`), read from the limiters at each scrape.

use std::sync::{Arc, Mutex, Weak};

use agentgate_middleware::rate_limit::BucketStats;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Metrics;

/// Labels of per-route counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

/// Rejections by route, and the local limiters' keys and evictions.
#[derive(Debug, Default)]
pub(super) struct RateLimitMetrics {
    rejected: Family<RouteLabel, Counter>,
    /// Each local limiter's route, its figures, and the evictions already counted.
    limiters: Mutex<Vec<(RouteLabel, Weak<BucketStats>, u64)>>,
    keys: Family<RouteLabel, Gauge>,
    evictions: Family<RouteLabel, Counter>,
}

impl RateLimitMetrics {
    /// Creates the rate-limit metrics and registers them in `registry`.
    pub(super) fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "rate_limited",
            "Requests a route's rate limit answered with 429, by route",
            metrics.rejected.clone(),
        );
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

    /// Reads the live limiters' keys and evictions into the metrics.
    pub(super) fn refresh(&self) {
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

impl Metrics {
    /// The counter of `route`'s rate-limit rejections (`agentgate_rate_limited_total`).
    pub fn rate_limit_rejections(&self, route: &str) -> Counter {
        let counter = self
            .rate_limits
            .rejected
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
            .rate_limits
            .limiters
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        limiters.push((label, Arc::downgrade(stats), 0));
    }
}
