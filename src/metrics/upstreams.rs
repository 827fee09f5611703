//! Upstream group health (`agentgate_upstream_healthy_peers`, `agentgate_upstream_peers`),
//! read from the running generation's groups at each scrape.

use std::sync::{Arc, Mutex};

use agentgate_proxy::UpstreamGroup;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Metrics;

/// Healthy and total peers per upstream group, read from the groups at each scrape.
#[derive(Debug, Default)]
pub(super) struct UpstreamGauges {
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
    /// Creates the upstream gauges and registers them in `registry`.
    pub(super) fn register(registry: &mut Registry) -> Self {
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

    /// Reads every group's peer health into the gauges.
    pub(super) fn refresh(&self) {
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

impl Metrics {
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
}
