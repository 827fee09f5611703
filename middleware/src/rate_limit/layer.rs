//! [`RateLimitLayer`]: cheap to clone; every service it makes shares one backend (local
//! buckets, or a shared store and its over-limit cache).

use std::sync::{Arc, Weak};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::{NoOpMiddleware, StateInformationMiddleware};
use governor::{Quota as GovernorQuota, RateLimiter};
use http::HeaderValue;
use tower_layer::Layer;

use super::Quota;
use super::buckets::{BucketMap, BucketStats};
use super::key::{KeyName, PolicyKey};
use super::service::RateLimit;
use super::shared::{OverLimitCache, SharedBuckets, SharedGcra};
use crate::KeyExtractor;
use crate::policy::{DEFAULT_MAX_KEYS, FailMode, PolicyError, RateLimitPolicy};

/// governor's keyed GCRA limiter over a bounded [`BucketMap`]; the middleware reports the
/// remaining burst on success.
pub(crate) type LocalLimiter<K, C> = RateLimiter<K, BucketMap<K>, C, StateInformationMiddleware>;

/// Over-limit keys a shared backend remembers unless told otherwise.
const DEFAULT_OVER_LIMIT_CACHE: usize = 10_000;

/// Where the buckets are.
pub(crate) enum Backend<K: Clone + Eq + std::hash::Hash, C: Clock> {
    /// In this process.
    Local {
        limiter: LocalLimiter<K, C>,
        /// The limiter's key count and evictions.
        stats: Arc<BucketStats>,
    },
    /// In a shared store; `name` writes a key's name there.
    Shared {
        buckets: Arc<SharedBuckets>,
        name: fn(&K, &mut String),
    },
}

/// What a layer and all its services share.
pub(crate) struct Limiter<K: Clone + Eq + std::hash::Hash, C: Clock> {
    pub(crate) quota: Quota,
    /// `RateLimit-Limit`, formatted once.
    pub(crate) limit: HeaderValue,
    pub(crate) backend: Backend<K, C>,
}

impl<K: Clone + Eq + std::hash::Hash, C: Clock> Limiter<K, C> {
    fn new(quota: Quota, backend: Backend<K, C>) -> Self {
        Self {
            quota,
            limit: HeaderValue::from(quota.burst),
            backend,
        }
    }

    fn local(quota: Quota, clock: C, max_keys: usize) -> Self {
        let buckets = BucketMap::new(max_keys);
        let stats = Arc::clone(buckets.stats());
        let limiter = RateLimiter::<_, _, _, NoOpMiddleware<C::Instant>>::new(
            quota.to_governor(),
            buckets,
            clock,
        )
        .with_middleware::<StateInformationMiddleware>();
        Self::new(quota, Backend::Local { limiter, stats })
    }

    fn prune(&self) {
        match &self.backend {
            Backend::Local { limiter, .. } => {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
            Backend::Shared { buckets, .. } => {
                buckets.over_limit.prune(tokio::time::Instant::now())
            }
        }
    }
}

/// Limits requests per key, with the buckets in this process or in a store every gateway
/// shares; see the [module docs](super).
///
/// `C` is governor's clock for local buckets: the default ([`DefaultClock`]) in
/// production, [`FakeRelativeClock`](governor::clock::FakeRelativeClock) in tests.
pub struct RateLimitLayer<E: KeyExtractor, C: Clock = DefaultClock> {
    extractor: E,
    limiter: Arc<Limiter<E::Key, C>>,
}

impl<E: KeyExtractor, C: Clock> Clone for RateLimitLayer<E, C> {
    fn clone(&self) -> Self {
        Self {
            extractor: self.extractor.clone(),
            limiter: Arc::clone(&self.limiter),
        }
    }
}

impl<E: KeyExtractor + std::fmt::Debug, C: Clock> std::fmt::Debug for RateLimitLayer<E, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match &self.limiter.backend {
            Backend::Local { .. } => "local",
            Backend::Shared { .. } => "shared",
        };
        f.debug_struct("RateLimitLayer")
            .field("extractor", &self.extractor)
            .field("quota", &self.limiter.quota)
            .field("backend", &backend)
            .field("keys", &self.len())
            .finish()
    }
}

impl<E: KeyExtractor> RateLimitLayer<E> {
    /// Local buckets: each key `extractor` finds gets `quota`, on the default clock.
    pub fn new(extractor: E, quota: impl Into<Quota>) -> Self {
        Self::with_clock(extractor, quota, DefaultClock::default())
    }

    /// Shared buckets: each key `extractor` finds gets `quota` in `gcra`, under names
    /// starting with `prefix` (give each policy its own, e.g. `myapp:rl:<route>:`).
    /// Fails open, with an over-limit cache of 10000 keys ([`fail`](Self::fail),
    /// [`over_limit_cache`](Self::over_limit_cache)).
    pub fn shared(
        extractor: E,
        gcra: Arc<dyn SharedGcra>,
        quota: impl Into<Quota>,
        prefix: impl Into<String>,
    ) -> Self
    where
        E::Key: KeyName,
    {
        let buckets = SharedBuckets {
            gcra,
            prefix: prefix.into(),
            fail: FailMode::Open,
            over_limit: OverLimitCache::new(DEFAULT_OVER_LIMIT_CACHE),
            store_errors: Default::default(),
        };
        let backend = Backend::Shared {
            buckets: Arc::new(buckets),
            name: <E::Key as KeyName>::write_name,
        };
        Self {
            extractor,
            limiter: Arc::new(Limiter::new(quota.into(), backend)),
        }
    }
}

impl RateLimitLayer<PolicyKey> {
    /// The layer `policy` describes, with local buckets on the default clock (the policy's
    /// `store` is not looked at: see [`shared_from_policy`](Self::shared_from_policy)).
    pub fn from_policy(policy: &RateLimitPolicy) -> Result<Self, PolicyError> {
        Self::from_policy_with_clock(policy, DefaultClock::default())
    }

    /// The layer `policy` describes, with its buckets in `gcra` under names starting with
    /// `prefix` (see [`shared`](Self::shared)), failing and caching refusals as the policy
    /// says. The policy's `store` is not looked at: the caller chose the backend.
    pub fn shared_from_policy(
        policy: &RateLimitPolicy,
        gcra: Arc<dyn SharedGcra>,
        prefix: impl Into<String>,
    ) -> Result<Self, PolicyError> {
        let key = PolicyKey::from_policy(policy)?;
        let layer = Self::shared(key, gcra, Quota::of(policy), prefix)
            .fail(policy.on_store_error)
            .over_limit_cache(policy.over_limit_cache);
        Ok(layer)
    }
}

impl<C: Clock> RateLimitLayer<PolicyKey, C> {
    /// The layer `policy` describes, with local buckets on `clock`.
    pub fn from_policy_with_clock(policy: &RateLimitPolicy, clock: C) -> Result<Self, PolicyError> {
        Ok(Self {
            extractor: PolicyKey::from_policy(policy)?,
            limiter: Arc::new(Limiter::local(Quota::of(policy), clock, policy.max_keys)),
        })
    }
}

impl<E: KeyExtractor, C: Clock> RateLimitLayer<E, C> {
    /// Local buckets: each key `extractor` finds gets `quota`, on `clock`, at most
    /// [`DEFAULT_MAX_KEYS`] keys.
    pub fn with_clock(extractor: E, quota: impl Into<Quota>, clock: C) -> Self {
        Self {
            extractor,
            limiter: Arc::new(Limiter::local(quota.into(), clock, DEFAULT_MAX_KEYS)),
        }
    }

    /// Wraps `inner` (what [`Layer::layer`] does).
    pub fn layer<S>(&self, inner: S) -> RateLimit<S, E, C> {
        RateLimit::new(inner, self.extractor.clone(), Arc::clone(&self.limiter))
    }

    /// Local buckets: holds at most `max_keys` (at least 1) keys; a new key beyond them
    /// first evicts the idlest (see [`RateLimitPolicy::max_keys`]). This gives the layer
    /// new, empty buckets: call it before making services (services made earlier keep the
    /// old ones). No effect on shared buckets.
    pub fn max_keys(self, max_keys: usize) -> Self
    where
        C: Clone,
    {
        let Backend::Local { limiter, .. } = &self.limiter.backend else {
            return self;
        };
        let clock = limiter.clock().clone();
        Self {
            limiter: Arc::new(Limiter::local(self.limiter.quota, clock, max_keys)),
            extractor: self.extractor,
        }
    }

    /// Shared buckets: what to do when the store fails. No effect on local buckets; call
    /// it before making services (services made earlier keep the old setting).
    pub fn fail(self, mode: FailMode) -> Self {
        self.reshare(|buckets| SharedBuckets {
            fail: mode,
            ..buckets.settings()
        })
    }

    /// Shared buckets: how many over-limit keys are remembered locally; 0 turns the cache
    /// off. No effect on local buckets; call it before making services.
    pub fn over_limit_cache(self, capacity: usize) -> Self {
        self.reshare(|buckets| SharedBuckets {
            over_limit: OverLimitCache::new(capacity),
            ..buckets.settings()
        })
    }

    /// A new shared backend made from the current one.
    fn reshare(self, with: impl FnOnce(&SharedBuckets) -> SharedBuckets) -> Self {
        let Backend::Shared { buckets, name } = &self.limiter.backend else {
            return self;
        };
        let backend = Backend::Shared {
            buckets: Arc::new(with(buckets)),
            name: *name,
        };
        Self {
            limiter: Arc::new(Limiter::new(self.limiter.quota, backend)),
            extractor: self.extractor,
        }
    }

    /// The quota each key gets.
    pub fn quota(&self) -> Quota {
        self.limiter.quota
    }

    /// Local buckets: the key count and evictions, live, for metrics. Shared buckets hold
    /// no key in process: their stats stay at zero.
    pub fn stats(&self) -> Arc<BucketStats> {
        match &self.limiter.backend {
            Backend::Local { stats, .. } => Arc::clone(stats),
            Backend::Shared { .. } => Arc::default(),
        }
    }

    /// Shared buckets: store calls that failed or timed out so far (0 for local buckets).
    pub fn store_errors(&self) -> u64 {
        match &self.limiter.backend {
            Backend::Local { .. } => 0,
            Backend::Shared { buckets, .. } => buckets
                .store_errors
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Forgets what is no longer needed and returns the memory: local keys whose bucket
    /// is full again (indistinguishable from a new key), shared over-limit keys whose
    /// `Retry-After` has passed. Call it periodically (every minute, say), or use
    /// [`spawn_pruner`](Self::spawn_pruner).
    pub fn prune(&self) {
        self.limiter.prune();
    }

    /// Keys holding state in this process (local buckets, or over-limit keys remembered
    /// for shared ones); approximate under concurrent use.
    pub fn len(&self) -> usize {
        match &self.limiter.backend {
            Backend::Local { limiter, .. } => limiter.len(),
            Backend::Shared { buckets, .. } => buckets.over_limit.len(),
        }
    }

    /// Whether no key holds state in this process.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<E, C> RateLimitLayer<E, C>
where
    E: KeyExtractor,
    C: Clock + Send + Sync + 'static,
    C::Instant: Send + Sync,
{
    /// Spawns a tokio task calling [`prune`](Self::prune) every `interval`. The task holds
    /// no strong reference: it ends once this layer and every service it made are dropped
    /// (or when the handle is aborted). Must be called inside a tokio runtime.
    pub fn spawn_pruner(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let limiter: Weak<Limiter<E::Key, C>> = Arc::downgrade(&self.limiter);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await; // the first tick is immediate
            loop {
                ticks.tick().await;
                let Some(limiter) = limiter.upgrade() else {
                    return;
                };
                limiter.prune();
            }
        })
    }
}

impl<S, E: KeyExtractor, C: Clock> Layer<S> for RateLimitLayer<E, C> {
    type Service = RateLimit<S, E, C>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitLayer::layer(self, inner)
    }
}

impl Quota {
    /// The quota `policy` describes (validated: `per_second` and the burst at least 1).
    pub(crate) fn of(policy: &RateLimitPolicy) -> Self {
        Self {
            interval: Duration::from_secs(1) / policy.per_second.max(1),
            burst: policy.burst_size().max(1),
        }
    }

    /// governor's form of it.
    pub(crate) fn to_governor(self) -> GovernorQuota {
        let burst = std::num::NonZeroU32::new(self.burst).unwrap_or(std::num::NonZeroU32::MIN);
        GovernorQuota::with_period(self.interval.max(Duration::from_nanos(1))).map_or_else(
            || GovernorQuota::per_second(burst),
            |quota| quota.allow_burst(burst),
        )
    }
}

impl From<GovernorQuota> for Quota {
    fn from(quota: GovernorQuota) -> Self {
        Self {
            interval: quota.replenish_interval(),
            burst: quota.burst_size().get(),
        }
    }
}
