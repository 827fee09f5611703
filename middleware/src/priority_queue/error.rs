//! Errors: [`Overloaded`] marks a rejection, [`PolicyError`] a policy the layer cannot use.

/// Why a request was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverloadReason {
    /// The queue was full and the request was not more important than any waiter.
    QueueFull,
    /// The request was waiting and a more important one took its place in the queue.
    Evicted,
    /// The request waited `max_wait_ms` without getting a slot.
    TimedOut,
}

/// A request was not run because the service was at capacity. The layer answers it itself
/// with `503 Service Unavailable`, `Retry-After: 1` and
/// `{"error":{"code":"overloaded","message":..}}`, and puts this in the response
/// extensions so outer layers (metrics, logs) can tell it from the service's own `503`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded {
    /// Why the request was turned away.
    pub reason: OverloadReason,
}

impl std::fmt::Display for Overloaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.reason {
            OverloadReason::QueueFull => f.write_str("overloaded: queue full"),
            OverloadReason::Evicted => f.write_str("overloaded: evicted by a higher priority"),
            OverloadReason::TimedOut => f.write_str("overloaded: waited too long"),
        }
    }
}

impl std::error::Error for Overloaded {}

pub use crate::policy::{PolicyError, Problem};
