use serde::{Deserialize, Serialize};

/// `[features]`: each optimization as a switch, so it can be rolled back without a
/// deploy and benchmarked against the naive design in one run.
///
/// All off is the naive baseline of `bench/ab.sh`: one Redis command per round trip with
/// sequential awaits, session state as one JSON string, a store existence check per stream
/// connection, one store tail per client, tools one at a time.
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
    /// Redis engine: every store call is one round trip (init, append and complete each a Lua
    /// script that also checks `[store.quotas]`), atomic. Off: one command per round trip,
    /// each awaited before the next (init: the quota count, write state, PEXPIRE; append:
    /// read owner, status and bytes, one XADD per event, update state, PEXPIRE both keys, the
    /// quota deadline, PUBLISH), and not atomic: concurrent writers may interleave. The
    /// memory engine ignores it. Default true.
    pub pipelining: bool,
    /// Redis engine: session state is a HASH, updated field by field (`HSET`, `HINCRBY`).
    /// Off: it is one JSON string (`GET`/`SET`), read, modified and written back whole on
    /// every change. Sessions written under one setting are unreadable under the other
    /// (`WRONGTYPE`): change it only on an empty (or drained) Redis. The memory engine
    /// ignores it. Default true.
    pub hash_state: bool,
}

impl Default for FeaturesConfig {
    fn default() -> Self {
        Self {
            existence_cache: true,
            sse_fanout: true,
            parallel_tools: true,
            pipelining: true,
            hash_state: true,
        }
    }
}
