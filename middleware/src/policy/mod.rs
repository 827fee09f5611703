//! Every layer's settings as plain serde data, and one way to check them: feature `policy`,
//! which needs nothing but `serde` (no tokio, no HTTP types), so a configuration crate can
//! parse and validate policies without building a layer.
//!
//! | policy | layer |
//! |---|---|
//! | [`RateLimitPolicy`] | `rate_limit::RateLimitLayer` |
//! | [`PriorityQueuePolicy`] | `priority_queue::PriorityQueueLayer` |
//! | [`ExistenceCachePolicy`] | `existence_cache::ExistenceCacheLayer` |
//! | [`FanoutPolicy`] | `sse::fanout::SseFanoutLayer` |
//! | [`MultiplexPolicy`] | `sse::multiplex::SseMultiplexLayer` |
//!
//! Each has `validate(&self) -> Result<(), PolicyError>`: the first broken rule, naming the
//! policy key at fault ([`PolicyError::key`]) and what is wrong with it
//! ([`PolicyError::problem`]). A layer's `from_policy` runs the same `validate`, so what
//! validates builds. Each type is also re-exported beside its layer.
//!
//! ```
//! use agentgate_middleware::policy::{Problem, RateLimitPolicy};
//!
//! let policy = RateLimitPolicy { per_second: 0, ..RateLimitPolicy::default() };
//! let error = policy.validate().unwrap_err();
//! assert_eq!((error.key(), error.problem()), ("per_second", &Problem::Zero));
//! assert_eq!(error.to_string(), "`per_second` must be at least 1");
//! ```

mod existence_cache;
mod fanout;
mod multiplex;
mod priority_queue;
mod rate_limit;

pub use existence_cache::{ExistenceCachePolicy, OnError};
pub use fanout::FanoutPolicy;
pub use multiplex::{MAX_STREAMS, MultiplexPolicy};
pub use priority_queue::{MAX_PRIORITY, PriorityQueuePolicy, StreamRule};
pub use rate_limit::{DEFAULT_MAX_KEYS, FailMode, KeyKind, LimitStore, RateLimitPolicy};

use std::fmt;

/// Why a policy cannot build its layer: the key at fault, relative to the policy
/// (`max_in_flight`, `key_header`), and the [`Problem`] with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    key: &'static str,
    problem: Problem,
}

/// What is wrong with a policy key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// It is zero but must be at least 1.
    Zero,
    /// It (or one of its entries) is `value`, above the largest accepted `max`.
    AboveMax {
        /// The value given.
        value: u64,
        /// The largest accepted value.
        max: u64,
    },
    /// It is required by another setting (`needed_by`, e.g. `key = "header"`).
    Missing {
        /// The setting that needs it.
        needed_by: &'static str,
    },
    /// Its value is not `expected` (e.g. "a header name").
    Invalid {
        /// The value given.
        value: String,
        /// What the value must be.
        expected: &'static str,
    },
}

impl PolicyError {
    /// The `problem` with the policy key `key`.
    pub fn new(key: &'static str, problem: Problem) -> Self {
        Self { key, problem }
    }

    /// `key` is zero but must be at least 1.
    pub(crate) fn zero(key: &'static str) -> Self {
        Self::new(key, Problem::Zero)
    }

    /// The policy key at fault, relative to the policy (`max_in_flight`).
    pub fn key(&self) -> &'static str {
        self.key
    }

    /// What is wrong with it.
    pub fn problem(&self) -> &Problem {
        &self.problem
    }
}

/// Checks that `value` (at `key`) is at least 1.
pub(crate) fn at_least_one(key: &'static str, value: u64) -> Result<(), PolicyError> {
    if value == 0 {
        return Err(PolicyError::zero(key));
    }
    Ok(())
}

impl fmt::Display for Problem {
    /// The problem without the key: `must be at least 1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Zero => f.write_str("must be at least 1"),
            Self::AboveMax { value, max } => write!(f, "is {value}; at most {max} is accepted"),
            Self::Missing { needed_by } => write!(f, "is required with {needed_by}"),
            Self::Invalid { value, expected } => write!(f, "{value:?} is not {expected}"),
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` {}", self.key, self.problem)
    }
}

impl std::error::Error for PolicyError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_policy_names_its_broken_key_the_same_way() {
        assert!(RateLimitPolicy::default().validate().is_ok());
        assert!(PriorityQueuePolicy::default().validate().is_ok());
        assert!(ExistenceCachePolicy::default().validate().is_ok());
        assert!(FanoutPolicy::default().validate().is_ok());
        assert!(MultiplexPolicy::default().validate().is_ok());
        let broken = [
            ExistenceCachePolicy {
                max_entries: 0,
                ..Default::default()
            }
            .validate(),
            FanoutPolicy {
                subscriber_queue: 0,
                ..Default::default()
            }
            .validate(),
            MultiplexPolicy {
                heartbeat_ms: 0,
                ..Default::default()
            }
            .validate(),
            RateLimitPolicy {
                burst: Some(0),
                ..Default::default()
            }
            .validate(),
        ];
        let keys: Vec<_> = broken
            .iter()
            .map(|e| e.as_ref().unwrap_err().key())
            .collect();
        assert_eq!(
            keys,
            ["max_entries", "subscriber_queue", "heartbeat_ms", "burst"]
        );
        for error in broken {
            let error = error.unwrap_err();
            assert_eq!(error.problem(), &Problem::Zero);
            assert_eq!(
                error.to_string(),
                format!("`{}` must be at least 1", error.key())
            );
        }
    }

    #[test]
    fn bounds_and_requirements_say_what_is_wrong() {
        let many = MultiplexPolicy {
            max_streams: MAX_STREAMS + 1,
            ..Default::default()
        };
        let error = many.validate().unwrap_err();
        assert_eq!(error.key(), "max_streams");
        assert_eq!(
            error.problem().to_string(),
            "is 257; at most 256 is accepted"
        );
        let header = RateLimitPolicy {
            key: KeyKind::Header,
            ..Default::default()
        };
        let error = header.validate().unwrap_err();
        assert_eq!(
            error.to_string(),
            "`key_header` is required with `key = \"header\"`"
        );
        let bad = RateLimitPolicy {
            key_header: Some("x api key".into()),
            ..header
        };
        assert_eq!(
            bad.validate().unwrap_err().problem().to_string(),
            "\"x api key\" is not a valid header name"
        );
    }
}
