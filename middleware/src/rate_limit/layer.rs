//! [`RateLimitLayer`]: cheap to clone; every service it makes shares one limiter.

use std::sync::{Arc, Weak};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::{NoOpMiddleware, StateInformationMiddleware};
use governor::{Quota, RateLimiter};
use http::HeaderValue;
use tower_layer::Layer;

use super::KeyExtractor;
use super::buckets::{BucketMap, BucketStats};
use super::error::PolicyError;
use super::key::PolicyKey;
use super::policy::RateLimitPolicy;
use super::service::RateLimitService;

/// governor's keyed GCRA limiter over a bounded [`BucketMap`]; the middleware reports the
/// remaining burst on success.
type Limiter<K, C> = RateLimiter<K, BucketMap<K>, C, StateInformationMiddleware>;

/// Buckets a layer holds unless told otherwise ([`RateLimitLayer::max_keys`]).
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// What the layer and all its services share.
pub(crate) struct Shared<K: Clone + Eq + std::hash::Hash, C: Clock> {
    pub(crate) limiter: Limiter<K, C>,
    /// The limiter's key count and evictions.
    pub(crate) stats: Arc<BucketStats>,
    pub(crate) quota: Quota,
    /// `RateLimit-Limit`, formatted once.
    pub(crate) limit: HeaderValue,
}

/// Limits requests per key; see the [module docs](super).
///
/// `C` is governor's clock: the default ([`DefaultClock`]) in production,
/// [`FakeRelativeClock`](governor::clock::FakeRelativeClock) in tests.
pub struct RateLimitLayer<E: KeyExtractor, C: Clock = DefaultClock> {
    extractor: E,
    shared: Arc<Shared<E::Key, C>>,
}

impl<E: KeyExtractor, C: Clock> Clone for RateLimitLayer<E, C> {
    fn clone(&self) -> Self {
        Self {
            extractor: self.extractor.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<E: KeyExtractor + std::fmt::Debug, C: Clock> std::fmt::Debug for RateLimitLayer<E, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("extractor", &self.extractor)
            .field("quota", &self.shared.quota)
            .field("keys", &self.shared.limiter.len())
            .finish()
    }
}

impl<E: KeyExtractor> RateLimitLayer<E> {
    /// A layer giving each key `extractor` finds the `quota`, on the default clock.
    pub fn new(extractor: E, quota: Quota) -> Self {
        Self::with_clock(extractor, quota, DefaultClock::default())
    }
}

impl RateLimitLayer<PolicyKey> {
    /// The layer `policy` describes, on the default clock.
    pub fn from_policy(policy: &RateLimitPolicy) -> Result<Self, PolicyError> {
        let quota = quota_of(policy)?;
        let key = PolicyKey::from_policy(policy)?;
        Ok(Self::build(
            key,
            quota,
            DefaultClock::default(),
            policy.max_keys,
        ))
    }
}

impl<C: Clock> RateLimitLayer<PolicyKey, C> {
    /// The layer `policy` describes, on `clock`.
    pub fn from_policy_with_clock(policy: &RateLimitPolicy, clock: C) -> Result<Self, PolicyError> {
        let quota = quota_of(policy)?;
        let key = PolicyKey::from_policy(policy)?;
        Ok(Self::build(key, quota, clock, policy.max_keys))
    }
}

fn quota_of(policy: &RateLimitPolicy) -> Result<Quota, PolicyError> {
    if policy.per_second == 0 {
        return Err(PolicyError::Zero("per_second"));
    }
    if policy.max_keys == 0 {
        return Err(PolicyError::Zero("max_keys"));
    }
    policy.quota().ok_or(PolicyError::Zero("burst"))
}

impl<E: KeyExtractor, C: Clock> RateLimitLayer<E, C> {
    /// A layer giving each key `extractor` finds the `quota`, on `clock`, holding at most
    /// [`DEFAULT_MAX_KEYS`] keys.
    pub fn with_clock(extractor: E, quota: Quota, clock: C) -> Self {
        Self::build(extractor, quota, clock, DEFAULT_MAX_KEYS)
    }

    fn build(extractor: E, quota: Quota, clock: C, max_keys: usize) -> Self {
        let buckets = BucketMap::new(max_keys);
        let stats = Arc::clone(buckets.stats());
        let limiter =
            RateLimiter::<_, _, _, NoOpMiddleware<C::Instant>>::new(quota, buckets, clock)
                .with_middleware::<StateInformationMiddleware>();
        Self {
            extractor,
            shared: Arc::new(Shared {
                limiter,
                stats,
                quota,
                limit: HeaderValue::from(quota.burst_size().get()),
            }),
        }
    }

    /// The key count and evictions, live, for metrics.
    pub fn stats(&self) -> Arc<BucketStats> {
        Arc::clone(&self.shared.stats)
    }

    /// Holds at most `max_keys` (at least 1) keys: a new key beyond them first evicts the
    /// idlest (see [`RateLimitPolicy::max_keys`]). This gives the layer new, empty
    /// buckets: call it before making services (services made earlier keep the old ones).
    pub fn max_keys(self, max_keys: usize) -> Self
    where
        C: Clone,
    {
        let clock = self.shared.limiter.clock().clone();
        Self::build(self.extractor, self.shared.quota, clock, max_keys)
    }

    /// The quota each key gets.
    pub fn quota(&self) -> Quota {
        self.shared.quota
    }

    /// Forgets keys whose bucket is full again (indistinguishable from a new key) and
    /// returns the memory. Keyed state never shrinks by itself: call this periodically
    /// (every minute, say), or use [`spawn_pruner`](Self::spawn_pruner).
    pub fn prune(&self) {
        self.shared.limiter.retain_recent();
        self.shared.limiter.shrink_to_fit();
    }

    /// How many keys hold state (approximate under concurrent use).
    pub fn len(&self) -> usize {
        self.shared.limiter.len()
    }

    /// Whether no key holds state.
    pub fn is_empty(&self) -> bool {
        self.shared.limiter.is_empty()
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
        let shared: Weak<Shared<E::Key, C>> = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await; // the first tick is immediate
            loop {
                ticks.tick().await;
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                shared.limiter.retain_recent();
                shared.limiter.shrink_to_fit();
            }
        })
    }
}

impl<S, E: KeyExtractor, C: Clock> Layer<S> for RateLimitLayer<E, C> {
    type Service = RateLimitService<S, E, C>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService::new(inner, self.extractor.clone(), self.shared.clone())
    }
}
