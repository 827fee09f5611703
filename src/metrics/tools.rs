//! Tool execution (`agentgate_tool_duration_seconds`, `agentgate_tool_executions_total`, by
//! tool and status) and the CPU worker pool's queue (`agentgate_tool_pool_queue_depth`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::Metrics;

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
    pub(super) fn register(registry: &mut Registry) -> Self {
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

impl Metrics {
    /// The tool executor's metrics.
    pub fn tools(&self) -> &ToolMetrics {
        &self.tools
    }
}
