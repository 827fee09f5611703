//! `[store]` and `[store.redis]`: event-log bounds, lifetimes, quotas, Redis URLs, Sentinel,
//! durable acknowledgement.

use super::{Problems, duplicates};
use crate::schema::{Config, StoreKind};

impl Config {
    pub(super) fn check_store(&self, p: &mut Problems) {
        let s = &self.store;
        p.require(
            s.events_maxlen >= 1,
            "store.events_maxlen",
            "must be at least 1",
        );
        p.require(
            s.retention_secs >= 1,
            "store.retention_secs",
            "must be at least 1",
        );
        p.require(
            s.session_ttl_secs >= 1,
            "store.session_ttl_secs",
            "must be at least 1",
        );
        p.require(
            s.quotas.max_active_sessions_per_key >= 1,
            "store.quotas.max_active_sessions_per_key",
            "must be at least 1 (there is no unlimited; set a large value)",
        );
        p.require(
            s.quotas.max_session_bytes >= 1,
            "store.quotas.max_session_bytes",
            "must be at least 1 (there is no unlimited; set a large value)",
        );
        if s.kind != StoreKind::Redis {
            return;
        }
        let r = &s.redis;
        if r.urls.is_empty() {
            p.push(
                "store.redis.urls",
                "at least one URL is required when store.kind = \"redis\"",
            );
        } else if !r.cluster && r.sentinel_master.is_none() && r.urls.len() != 1 {
            p.push(
                "store.redis.urls",
                format!(
                    "exactly one URL is required when cluster = false (found {}); \
                     set store.redis.cluster = true to use several seed nodes",
                    r.urls.len()
                ),
            );
        }
        for (i, url) in r.urls.iter().enumerate() {
            let key = format!("store.redis.urls[{i}]");
            match url
                .strip_prefix("redis://")
                .or_else(|| url.strip_prefix("rediss://"))
            {
                None => p.push(&key, "must start with redis:// or rediss://"),
                Some("") => p.push(&key, "must name a host after the scheme"),
                Some(_) => {}
            }
        }
        for (i, first) in duplicates(r.urls.iter().enumerate()) {
            p.push(
                &format!("store.redis.urls[{i}]"),
                format!("duplicates store.redis.urls[{first}]"),
            );
        }
        match &r.sentinel_master {
            Some(name) if name.trim().is_empty() => p.push(
                "store.redis.sentinel_master",
                "must name the master the Sentinels monitor",
            ),
            Some(_) if r.cluster => p.push(
                "store.redis.sentinel_master",
                "Sentinel and cluster = true exclude each other; set one",
            ),
            None if r.sentinel_master_password.is_some() => p.push(
                "store.redis.sentinel_master_password",
                "is used only with store.redis.sentinel_master (a standalone password goes in \
                 its URL)",
            ),
            _ => {}
        }
        if r.ack_replicas > 0 {
            if r.cluster {
                p.push(
                    "store.redis.ack_replicas",
                    "is not supported with cluster = true (standalone or Sentinel only)",
                );
            }
            if !self.features.pipelining {
                p.push(
                    "store.redis.ack_replicas",
                    "needs features.pipelining = true (the write and its WAIT share one round \
                     trip)",
                );
            }
            p.require(
                r.ack_timeout_ms >= 1 && r.ack_timeout_ms < r.timeout_ms,
                "store.redis.ack_timeout_ms",
                format!(
                    "must be at least 1 and less than store.redis.timeout_ms ({})",
                    r.timeout_ms
                ),
            );
        }
        p.require(
            r.timeout_ms >= 1,
            "store.redis.timeout_ms",
            "must be at least 1",
        );
        p.require(
            r.connect_timeout_ms >= 1,
            "store.redis.connect_timeout_ms",
            "must be at least 1",
        );
    }
}
