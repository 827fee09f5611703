//! [`Census`]: one gateway node's view of which sessions are live, for an engine that cannot
//! count them all cheaply (Redis: counting every session's keys takes a `SCAN` of the whole
//! keyspace, and on Cluster of every node).
//!
//! The node counts the sessions *it created* until it sees them end: completed through this
//! node, or idle for the session TTL since the last write this node made. So:
//! - with one gateway node the count is exact (up to the sweep interval);
//! - with several nodes each counts its own sessions, and the sum over nodes is the total,
//!   except that a session created on node A and completed on node B stays in A's count
//!   until A's idle deadline for it passes (an overcount bounded by the session TTL), and a
//!   session only written through B leaves A's count at A's deadline though it is still
//!   running (an undercount).
//!
//! It also names a few live sessions for sampling their memory cost.

use std::time::{Duration, Instant};

use dashmap::DashMap;
use prometheus_client::metrics::gauge::Gauge;

use super::SessionId;

/// Sessions created through this node and not yet seen ending, with their idle deadline.
#[derive(Debug)]
pub struct Census {
    deadlines: DashMap<SessionId, Instant>,
    /// Kept equal to the number of sessions counted.
    gauge: Gauge,
}

impl Census {
    /// An empty census that reports its count on `gauge`.
    pub fn new(gauge: Gauge) -> Self {
        Self {
            deadlines: DashMap::new(),
            gauge,
        }
    }

    /// `id` was created through this node and lives `ttl` unless written again.
    pub fn created(&self, id: &SessionId, ttl: Duration) {
        self.deadlines.insert(id.clone(), Instant::now() + ttl);
        self.publish();
    }

    /// `id` was written through this node: it lives `ttl` more (if it is counted here).
    pub fn written(&self, id: &SessionId, ttl: Duration) {
        if let Some(mut deadline) = self.deadlines.get_mut(id) {
            *deadline = Instant::now() + ttl;
        }
    }

    /// `id` completed through this node.
    pub fn completed(&self, id: &SessionId) {
        if self.deadlines.remove(id).is_some() {
            self.publish();
        }
    }

    /// Forgets the sessions whose idle deadline has passed.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.deadlines.retain(|_, deadline| *deadline > now);
        self.publish();
    }

    /// Sessions counted now.
    pub fn len(&self) -> usize {
        self.deadlines.len()
    }

    /// True when no session is counted.
    pub fn is_empty(&self) -> bool {
        self.deadlines.is_empty()
    }

    /// Up to `n` counted sessions (whichever the map yields first).
    pub fn some(&self, n: usize) -> Vec<SessionId> {
        self.deadlines
            .iter()
            .take(n)
            .map(|entry| entry.key().clone())
            .collect()
    }

    fn publish(&self) {
        self.gauge
            .set(i64::try_from(self.deadlines.len()).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_until_completed_or_idle() {
        let gauge = Gauge::default();
        let census = Census::new(gauge.clone());
        let (a, b): (SessionId, SessionId) = ("a".parse().unwrap(), "b".parse().unwrap());
        census.created(&a, Duration::from_secs(3600));
        census.created(&b, Duration::ZERO);
        assert_eq!(gauge.get(), 2);
        census.sweep(); // b's deadline has passed
        assert_eq!(gauge.get(), 1);
        assert_eq!(census.some(5), vec![a.clone()]);
        census.written(&b, Duration::from_secs(3600)); // not counted here: stays out
        census.completed(&a);
        assert_eq!(gauge.get(), 0);
        assert!(census.is_empty());
    }
}
