//! Configuration reloads (`agentgate_config_reloads_total{result}`): applied, or rejected
//! (the running configuration kept serving).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::Metrics;

/// Labels of `agentgate_config_reloads_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabel {
    result: &'static str,
}

/// Reloads, by result.
#[derive(Debug)]
pub(super) struct ReloadCounter(Family<ReloadLabel, Counter>);

impl ReloadCounter {
    /// Creates the counter and registers it in `registry`.
    pub(super) fn register(registry: &mut Registry) -> Self {
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
        Self(reloads)
    }
}

impl Metrics {
    /// Counts a configuration reload, `applied` or rejected.
    pub fn config_reload(&self, applied: bool) {
        let result = if applied { "applied" } else { "rejected" };
        self.reloads.0.get_or_create(&ReloadLabel { result }).inc();
    }
}
