//! `[sse]` and `[existence_cache]`: stream tuning and the layers' own policies (fan-out,
//! multiplex, existence cache), checked by the policies' `validate()`.

use super::Problems;
use crate::schema::Config;

impl Config {
    pub(super) fn check_sse(&self, p: &mut Problems) {
        let s = &self.sse;
        p.require(
            s.heartbeat_secs >= 1,
            "sse.heartbeat_secs",
            "must be at least 1",
        );
        p.require(s.retry_ms >= 1, "sse.retry_ms", "must be at least 1");
        p.require(
            (1..=10_000).contains(&s.replay_batch),
            "sse.replay_batch",
            "must be between 1 and 10000",
        );
        p.policy("sse.fanout", s.fanout.validate());
        p.policy("sse.multiplex", s.multiplex.validate());
    }

    pub(super) fn check_existence_cache(&self, p: &mut Problems) {
        let c = &self.existence_cache;
        p.policy("existence_cache", c.validate());
        p.require(
            c.positive_ttl_ms <= 3_600_000,
            "existence_cache.positive_ttl_ms",
            "must be at most 3600000 (one hour)",
        );
        p.require(
            c.negative_ttl_ms <= 3_600_000,
            "existence_cache.negative_ttl_ms",
            "must be at most 3600000 (one hour)",
        );
    }
}
