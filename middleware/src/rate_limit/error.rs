//! Errors: [`RateLimited`] marks a rejection, [`PolicyError`] a policy the layer cannot use.

use std::time::Duration;

/// A request was over its limit. The layer answers it itself (see the
/// [module docs](super)) and puts this in the `429` response's extensions, so outer layers
/// (metrics, logs) can tell a rate-limit rejection from the service's own `429`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    /// How long until the key may make one more request.
    pub retry_after: Duration,
}

impl std::fmt::Display for RateLimited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rate limited, retry after {:?}", self.retry_after)
    }
}

impl std::error::Error for RateLimited {}

pub use crate::policy::{PolicyError, Problem};
