//! The Redis backend's side of the layer: [`SharedGcra`], a GCRA whose buckets live in a
//! store every gateway shares ([`RedisGcra`](super::RedisGcra) with the `redis` feature),
//! and the local cache of keys known to be over their limit.
//!
//! Per request with a key:
//!
//! 1. If the key is in the **over-limit cache** (it was refused recently and its
//!    `Retry-After` has not passed), answer `429` at once: a hot abuser costs no store call.
//!    The cache holds at most `over_limit_cache` keys; when full, new entries are not
//!    cached (refusals stay correct, they just cost a store call).
//! 2. Otherwise one [`SharedGcra::check`] (for Redis: one `EVALSHA`, one round trip),
//!    awaited in the response future. Allowed: the inner service is called and the
//!    response carries `RateLimit-Limit` and `RateLimit-Remaining`. Refused: the same `429`
//!    as the local backend, and the key is cached until its `Retry-After`.
//! 3. The store failed or timed out: [`FailMode::Open`] calls the
//!    inner service (and counts the error,
//!    [`RateLimitLayer::store_errors`](super::RateLimitLayer::store_errors));
//!    [`FailMode::Closed`] answers `503` with `Retry-After: 1` and
//!    `{"error":{"code":"rate_limit_unavailable",...}}`.
//!
//! Skipping the store for a cached refusal changes nothing in the bucket: a refused GCRA
//! request never moves the bucket's state. A key refused by one gateway and allowed again by
//! the bucket before its cached `Retry-After` cannot happen either: `Retry-After` is exactly
//! when the bucket allows one more request.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

use super::Quota;
use crate::policy::FailMode;

/// What a shared bucket said about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Counted; the key may still make `remaining` requests at once.
    Allowed {
        /// Requests the key may still make at once.
        remaining: u32,
    },
    /// Over the limit; not counted.
    Limited {
        /// When the key may make one more request.
        retry_after: Duration,
    },
}

/// The shared store could not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUnavailable(pub String);

impl std::fmt::Display for StoreUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rate limit store unavailable: {}", self.0)
    }
}

impl std::error::Error for StoreUnavailable {}

/// The future a [`SharedGcra`] check returns. It owns what it needs (the layer awaits it
/// in its response future, after `call` has returned).
pub type CheckFuture = Pin<Box<dyn Future<Output = Result<Verdict, StoreUnavailable>> + Send>>;

/// A GCRA whose buckets live in a store shared by every gateway (Redis: `RedisGcra`, with
/// the `redis` feature).
///
/// `check` counts one request against `key`'s bucket atomically and says whether it is
/// allowed. It must not wait long: bound it with a timeout and fail.
pub trait SharedGcra: Send + Sync + 'static {
    /// Counts one request against `key` under `quota`.
    fn check(&self, key: &str, quota: Quota) -> CheckFuture;
}

/// Keys known to be over their limit, until when.
#[derive(Debug)]
pub(crate) struct OverLimitCache {
    until: DashMap<String, Instant>,
    capacity: usize,
}

impl OverLimitCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            until: DashMap::new(),
            capacity,
        }
    }

    /// How long `key` is still refused, if it is cached and not yet due.
    pub(crate) fn refused_for(&self, key: &str, now: Instant) -> Option<Duration> {
        let until = *self.until.get(key)?;
        if until > now {
            return Some(until - now);
        }
        self.until.remove_if(key, |_, until| *until <= now);
        None
    }

    pub(crate) fn remember(&self, key: String, until: Instant) {
        if self.until.len() < self.capacity || self.until.contains_key(&key) {
            self.until.insert(key, until);
        }
    }

    pub(crate) fn prune(&self, now: Instant) {
        self.until.retain(|_, until| *until > now);
    }

    pub(crate) fn len(&self) -> usize {
        self.until.len()
    }
}

/// The Redis backend of a [`RateLimitLayer`](super::RateLimitLayer): the store, where in it
/// this layer's buckets are, what to do when it fails, and the over-limit cache.
pub(crate) struct SharedBuckets {
    pub(crate) gcra: Arc<dyn SharedGcra>,
    /// Prepended to every key: keeps policies (routes) in separate buckets.
    pub(crate) prefix: String,
    pub(crate) fail: FailMode,
    pub(crate) over_limit: OverLimitCache,
    pub(crate) store_errors: AtomicU64,
}

impl SharedBuckets {
    /// The same settings, with an empty over-limit cache of the same capacity and no
    /// store errors counted.
    pub(crate) fn settings(&self) -> Self {
        Self {
            gcra: Arc::clone(&self.gcra),
            prefix: self.prefix.clone(),
            fail: self.fail,
            over_limit: OverLimitCache::new(self.over_limit.capacity),
            store_errors: AtomicU64::new(0),
        }
    }

    /// Counts a failed store call.
    pub(crate) fn store_failed(&self) {
        self.store_errors.fetch_add(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for SharedBuckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBuckets")
            .field("prefix", &self.prefix)
            .field("fail", &self.fail)
            .field("over_limit", &self.over_limit.len())
            .finish_non_exhaustive()
    }
}
