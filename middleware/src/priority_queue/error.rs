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

/// Why a [`PriorityQueuePolicy`](super::PriorityQueuePolicy) cannot build a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyError {
    /// The named key is zero but must be at least 1.
    Zero(&'static str),
    /// A priority (at the named key) is above [`MAX_PRIORITY`](super::MAX_PRIORITY).
    AboveMax {
        /// The key: `default_priority` or `api_key_priorities`.
        key: &'static str,
        /// The priority given.
        priority: u8,
    },
}

impl PolicyError {
    /// The policy key that is wrong, relative to the policy (`max_in_flight`).
    pub fn key(&self) -> &'static str {
        match self {
            Self::Zero(key) | Self::AboveMax { key, .. } => key,
        }
    }
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Zero(key) => write!(f, "`{key}` must be at least 1"),
            Self::AboveMax { key, priority } => write!(
                f,
                "`{key}` is {priority}; priorities go from 0 to {}",
                super::MAX_PRIORITY
            ),
        }
    }
}

impl std::error::Error for PolicyError {}
