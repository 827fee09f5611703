//! [`ExistenceCacheLayer`]: cheap to clone; every service it makes shares one cache.

use std::hash::Hash;

use tower_layer::Layer;

use super::ExistenceCheck;
use super::cache::Cache;
use super::service::ExistenceCache;
use crate::policy::ExistenceCachePolicy;

/// Wraps services with an existence check in front; see the [module docs](super).
pub struct ExistenceCacheLayer<E, K, C> {
    extractor: E,
    cache: Cache<K, C>,
    not_found: NotFound,
}

/// The JSON error a missing key gets: `{"error":{"code":..,"message":..}}` with status 404.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotFound {
    /// Stable machine-readable code. Default `not_found`.
    pub code: &'static str,
    /// Human-readable message. Default `not found`.
    pub message: &'static str,
}

impl Default for NotFound {
    fn default() -> Self {
        Self {
            code: "not_found",
            message: "not found",
        }
    }
}

impl<E: Clone, K, C> Clone for ExistenceCacheLayer<E, K, C> {
    fn clone(&self) -> Self {
        Self {
            extractor: self.extractor.clone(),
            cache: self.cache.clone(),
            not_found: self.not_found,
        }
    }
}

impl<E, K, C> std::fmt::Debug for ExistenceCacheLayer<E, K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExistenceCacheLayer")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl<E, K, C> ExistenceCacheLayer<E, K, C>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    C: ExistenceCheck<K>,
{
    /// A layer extracting keys with `extractor` and checking them with `check`.
    pub fn new(extractor: E, check: C, policy: ExistenceCachePolicy) -> Self {
        Self {
            extractor,
            cache: Cache::new(check, policy),
            not_found: NotFound::default(),
        }
    }

    /// Sets the code and message of the 404 a missing key gets (to match the service's own).
    pub fn not_found(mut self, not_found: NotFound) -> Self {
        self.not_found = not_found;
        self
    }

    /// The shared cache (keep a clone to [`invalidate`](Cache::invalidate) keys).
    pub fn cache(&self) -> &Cache<K, C> {
        &self.cache
    }
}

impl<E: Clone, K, C> ExistenceCacheLayer<E, K, C> {
    /// Wraps `inner` (what [`Layer::layer`] does).
    pub fn layer<S>(&self, inner: S) -> ExistenceCache<S, E, K, C> {
        ExistenceCache::new(
            inner,
            self.extractor.clone(),
            self.cache.clone(),
            self.not_found,
        )
    }
}

impl<S, E: Clone, K, C> Layer<S> for ExistenceCacheLayer<E, K, C> {
    type Service = ExistenceCache<S, E, K, C>;

    fn layer(&self, inner: S) -> Self::Service {
        ExistenceCacheLayer::layer(self, inner)
    }
}
