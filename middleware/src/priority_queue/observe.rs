//! [`QueueObserver`]: how a metrics system sees the queue (depth by priority, waits, sheds)
//! without the layer depending on one.

use std::time::Duration;

use super::error::OverloadReason;

/// Told what happens in a [`PriorityQueueLayer`](super::PriorityQueueLayer)'s queue; plug
/// in Prometheus, `metrics`, logs... Every method has an empty default.
///
/// Calls are made outside the queue's lock, on the request's task; keep them cheap.
pub trait QueueObserver: Send + Sync + 'static {
    /// A request of `priority` started waiting (`delta = 1`) or stopped waiting
    /// (`delta = -1`: it got a slot, was turned away, or its caller went away). The sum of
    /// deltas per priority is that priority's queue depth.
    fn depth(&self, priority: u8, delta: i64) {
        let _ = (priority, delta);
    }

    /// A queued request of `priority` got a slot after waiting `waited`. (Requests that ran
    /// at once are not reported: they did not wait.)
    fn waited(&self, priority: u8, waited: Duration) {
        let _ = (priority, waited);
    }

    /// A request of `priority` was turned away with `503` for `reason`.
    fn shed(&self, priority: u8, reason: OverloadReason) {
        let _ = (priority, reason);
    }
}

/// The default observer: sees nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

impl QueueObserver for NoObserver {}
