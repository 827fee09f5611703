//! Keeps the store's figures that are not counted per call: once a second it sweeps this
//! node's [`Census`](crate::store::census::Census) of live sessions (sessions idle past
//! their TTL leave it), and every 5 seconds it samples memory per session: `MEMORY USAGE`
//! of the meta hash, the event stream and the idempotency records of up to 8 live
//! sessions, averaged. The sampling
//! commands go through an uncounted connection: they are not the requests' cost.

use std::sync::Weak;
use std::time::Duration;

use super::RedisStore;
use super::keys::{events_key, idem_key, idem_order_key, meta_key};

/// Sessions whose `MEMORY USAGE` is sampled.
const MEMORY_SAMPLE: usize = 8;
/// How often memory per session is sampled.
const MEMORY_SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Keeps the census current (every second) and samples memory per session, until the store
/// is dropped.
pub(super) async fn run_census(store: Weak<RedisStore>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_sample: Option<tokio::time::Instant> = None;
    loop {
        tick.tick().await;
        let Some(store) = store.upgrade() else { return };
        store.census.sweep();
        let due = last_sample.is_none_or(|at| at.elapsed() >= MEMORY_SAMPLE_EVERY);
        if due && !store.census.is_empty() {
            last_sample = Some(tokio::time::Instant::now());
            if let Some(bytes) = store.sample_memory().await {
                store.stats.session_memory_bytes.set(bytes);
            }
        }
    }
}

impl RedisStore {
    /// Average `MEMORY USAGE` (meta hash, event stream, idempotency records) of a few live
    /// sessions, in bytes; `None` when none could be measured.
    async fn sample_memory(&self) -> Option<i64> {
        // A connection whose traffic is not counted: sampling is not the requests' cost.
        let mut conn = self.conn.uncounted();
        let (mut total, mut measured) = (0_i64, 0_i64);
        for id in self.census.some(MEMORY_SAMPLE) {
            let mut session = 0_i64;
            let keys = [
                meta_key(&id),
                events_key(&id),
                idem_key(&id),
                idem_order_key(&id),
            ];
            for key in keys {
                let usage = redis::cmd("MEMORY").arg("USAGE").arg(&key).clone();
                let bytes: Option<i64> = self.call(usage.query_async(&mut conn)).await.ok()?;
                session += bytes.unwrap_or(0);
            }
            if session > 0 {
                total += session;
                measured += 1;
            }
        }
        (measured > 0).then(|| total / measured)
    }
}
