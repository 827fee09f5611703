use serde::{Deserialize, Serialize};

/// `[features]`: each optimization as a switch, so it can be rolled back without a
/// deploy and benchmarked against the naive design in one run.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeaturesConfig {
    /// Guard stream connections with the existence cache (`[existence_cache]`): concurrent
    /// connects to one session share one store lookup. Off: every stream connection asks
    /// the store itself. Default true.
    pub existence_cache: bool,
    /// Concurrent viewers of one session share one store tail (`[sse.fanout]`). Off: every
    /// stream connection reads the store itself. Default true.
    pub sse_fanout: bool,
    /// Run the independent calls of a tool batch at once, up to `tools.max_parallel`.
    /// Off: calls run one by one in dependency order (the baseline the benchmark compares
    /// against). Default true.
    pub parallel_tools: bool,
}

impl Default for FeaturesConfig {
    fn default() -> Self {
        Self {
            existence_cache: true,
            sse_fanout: true,
            parallel_tools: true,
        }
    }
}
