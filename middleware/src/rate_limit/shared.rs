//! [`SharedRateLimitLayer`]: the same GCRA, with its buckets in a store every gateway shares
//! ([`SharedGcra`]; Redis with the `redis` feature), so a fleet enforces one limit.
//!
//! Per request with a key:
//!
//! 1. If the key is in the **over-limit cache** (it was refused recently and its
//!    `Retry-After` has not passed), answer `429` at once: a hot abuser costs no store call.
//!    The cache holds at most `over_limit_cache` keys; when full, new entries are not
//!    cached (refusals stay correct, they just cost a store call).
//! 2. Otherwise one [`SharedGcra::check`] (for Redis: one `EVALSHA`, one round trip).
//!    Allowed: the inner service is called and the response carries `RateLimit-Limit` and
//!    `RateLimit-Remaining`. Refused: the same `429` as the local layer (see the
//!    [module docs](super)), and the key is cached until its `Retry-After`.
//! 3. The store failed or timed out: [`FailMode::Open`] calls the inner service (and counts
//!    the error, [`SharedRateLimitLayer::store_errors`]); [`FailMode::Closed`] answers
//!    `503` with `Retry-After: 1` and
//!    `{"error":{"code":"rate_limit_unavailable",...}}`.
//!
//! Skipping the store for a cached refusal changes nothing in the bucket: a refused GCRA
//! request never moves the bucket's state. A key refused by one gateway and allowed again by
//! the bucket before its cached `Retry-After` cannot happen either: `Retry-After` is exactly
//! when the bucket allows one more request.
//!
//! The inner service must be `Clone` (the store call happens before the inner call, so the
//! ready service is taken and a clone left in its place, as tower's `Buffer` users do).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use super::KeyExtractor;
use super::error::PolicyError;
use super::key::{KeyName, PolicyKey};
use super::policy::{FailMode, RateLimitPolicy};
use super::service::{RATELIMIT_LIMIT, RATELIMIT_REMAINING, too_many_requests};
use crate::json_error::ResponseBody;

/// A bucket's settings as a shared store needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcraQuota {
    /// One request's worth of capacity comes back every `interval` (`1 / per_second`).
    pub interval: Duration,
    /// Most requests a key may make at once.
    pub burst: u32,
}

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

/// The future a [`SharedGcra`] check returns.
pub type CheckFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Verdict, StoreUnavailable>> + Send + 'a>>;

/// A GCRA whose buckets live in a store shared by every gateway (Redis: `RedisGcra`, with
/// the `redis` feature).
///
/// `check` counts one request against `key`'s bucket atomically and says whether it is
/// allowed. It must not wait long: bound it with a timeout and fail.
pub trait SharedGcra: Send + Sync + 'static {
    /// Counts one request against `key` under `quota`.
    fn check<'a>(&'a self, key: &'a str, quota: GcraQuota) -> CheckFuture<'a>;
}

/// The body of the fail-closed `503`.
const UNAVAILABLE_JSON: &str = r#"{"error":{"code":"rate_limit_unavailable","message":"the rate limit store is unavailable, retry later"}}"#;

/// Keys known to be over their limit, until when.
struct OverLimitCache {
    until: DashMap<String, Instant>,
    capacity: usize,
}

impl OverLimitCache {
    /// How long `key` is still refused, if it is cached and not yet due.
    fn refused_for(&self, key: &str, now: Instant) -> Option<Duration> {
        let until = *self.until.get(key)?;
        if until > now {
            return Some(until - now);
        }
        self.until.remove_if(key, |_, until| *until <= now);
        None
    }

    fn remember(&self, key: String, until: Instant) {
        if self.until.len() < self.capacity || self.until.contains_key(&key) {
            self.until.insert(key, until);
        }
    }

    fn prune(&self, now: Instant) {
        self.until.retain(|_, until| *until > now);
    }
}

/// The layer's settings.
#[derive(Clone)]
struct Settings {
    gcra: Arc<dyn SharedGcra>,
    quota: GcraQuota,
    /// Prepended to every key: keeps policies (routes) in separate buckets.
    prefix: String,
    fail: FailMode,
    /// `RateLimit-Limit`, formatted once.
    limit: HeaderValue,
}

/// What the layer and all its services share.
struct Shared {
    settings: Settings,
    over_limit: Arc<OverLimitCache>,
    store_errors: Arc<AtomicU64>,
}

/// Limits requests per key across every gateway sharing the [`SharedGcra`]; see the
/// [module docs](self).
pub struct SharedRateLimitLayer<E> {
    extractor: E,
    shared: Arc<Shared>,
}

impl<E: Clone> Clone for SharedRateLimitLayer<E> {
    fn clone(&self) -> Self {
        Self {
            extractor: self.extractor.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<E: std::fmt::Debug> std::fmt::Debug for SharedRateLimitLayer<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let settings = &self.shared.settings;
        f.debug_struct("SharedRateLimitLayer")
            .field("extractor", &self.extractor)
            .field("quota", &settings.quota)
            .field("prefix", &settings.prefix)
            .field("fail", &settings.fail)
            .finish_non_exhaustive()
    }
}

impl SharedRateLimitLayer<PolicyKey> {
    /// The layer `policy` describes, with its buckets in `gcra` under keys starting with
    /// `prefix` (give each policy its own, e.g. `agentgate:rl:<route>:`). The policy's
    /// `store` is not looked at: the caller chose this layer.
    pub fn from_policy(
        policy: &RateLimitPolicy,
        gcra: Arc<dyn SharedGcra>,
        prefix: impl Into<String>,
    ) -> Result<Self, PolicyError> {
        if policy.per_second == 0 {
            return Err(PolicyError::Zero("per_second"));
        }
        let burst = policy.burst.unwrap_or(policy.per_second);
        if burst == 0 {
            return Err(PolicyError::Zero("burst"));
        }
        let quota = GcraQuota {
            interval: Duration::from_secs(1) / policy.per_second,
            burst,
        };
        let layer = Self::new(PolicyKey::from_policy(policy)?, gcra, quota, prefix)
            .fail(policy.on_store_error)
            .over_limit_cache(policy.over_limit_cache);
        Ok(layer)
    }
}

impl<E> SharedRateLimitLayer<E> {
    /// A layer giving each key `extractor` finds the `quota`, in `gcra`, failing open, with
    /// an over-limit cache of 10000 keys.
    pub fn new(
        extractor: E,
        gcra: Arc<dyn SharedGcra>,
        quota: GcraQuota,
        prefix: impl Into<String>,
    ) -> Self {
        Self {
            extractor,
            shared: Arc::new(Shared {
                settings: Settings {
                    gcra,
                    quota,
                    prefix: prefix.into(),
                    fail: FailMode::Open,
                    limit: HeaderValue::from(quota.burst),
                },
                over_limit: Arc::new(OverLimitCache {
                    until: DashMap::new(),
                    capacity: 10_000,
                }),
                store_errors: Arc::new(AtomicU64::new(0)),
            }),
        }
    }

    /// What to do when the store fails. Layers cloned earlier keep their setting.
    pub fn fail(self, mode: FailMode) -> Self {
        let mut settings = self.shared.settings.clone();
        settings.fail = mode;
        let cache = Arc::clone(&self.shared.over_limit);
        self.with(settings, cache)
    }

    /// How many over-limit keys are remembered locally; 0 turns the cache off. Layers
    /// cloned earlier keep their cache.
    pub fn over_limit_cache(self, capacity: usize) -> Self {
        let cache = Arc::new(OverLimitCache {
            until: DashMap::new(),
            capacity,
        });
        let settings = self.shared.settings.clone();
        self.with(settings, cache)
    }

    fn with(self, settings: Settings, over_limit: Arc<OverLimitCache>) -> Self {
        let store_errors = Arc::clone(&self.shared.store_errors);
        Self {
            extractor: self.extractor,
            shared: Arc::new(Shared {
                settings,
                over_limit,
                store_errors,
            }),
        }
    }

    /// Store calls that failed or timed out so far.
    pub fn store_errors(&self) -> u64 {
        self.shared.store_errors.load(Ordering::Relaxed)
    }

    /// Keys currently remembered as over their limit (including ones already due).
    pub fn over_limit_len(&self) -> usize {
        self.shared.over_limit.until.len()
    }

    /// Forgets over-limit keys whose `Retry-After` has passed.
    pub fn prune(&self) {
        self.shared.over_limit.prune(Instant::now());
    }
}

impl<S, E: Clone> Layer<S> for SharedRateLimitLayer<E> {
    type Service = SharedRateLimitService<S, E>;

    fn layer(&self, inner: S) -> Self::Service {
        SharedRateLimitService {
            inner,
            extractor: self.extractor.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service made by [`SharedRateLimitLayer`].
pub struct SharedRateLimitService<S, E> {
    inner: S,
    extractor: E,
    shared: Arc<Shared>,
}

impl<S: Clone, E: Clone> Clone for SharedRateLimitService<S, E> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            extractor: self.extractor.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: std::fmt::Debug, E: std::fmt::Debug> std::fmt::Debug for SharedRateLimitService<S, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRateLimitService")
            .field("inner", &self.inner)
            .field("extractor", &self.extractor)
            .finish_non_exhaustive()
    }
}

/// The future of a [`SharedRateLimitService`] call.
pub type SharedResponseFuture<B, Error> =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody<B>>, Error>> + Send>>;

impl<S, E, ReqBody, ResBody> Service<Request<ReqBody>> for SharedRateLimitService<S, E>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    E: KeyExtractor,
    E::Key: KeyName,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = SharedResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let Some(key) = self.extractor.extract(&req) else {
            let call = self.inner.call(req);
            return Box::pin(async move { Ok(call.await?.map(ResponseBody::inner)) });
        };
        let shared = Arc::clone(&self.shared);
        let mut name = shared.settings.prefix.clone();
        key.write_name(&mut name);
        if let Some(wait) = shared.over_limit.refused_for(&name, Instant::now()) {
            let limited = too_many_requests(wait, shared.settings.limit.clone());
            return Box::pin(std::future::ready(Ok(limited)));
        }
        // The ready service goes with the request; a clone waits for the next poll_ready.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let settings = &shared.settings;
            let remaining = match settings.gcra.check(&name, settings.quota).await {
                Ok(Verdict::Allowed { remaining }) => Some(remaining),
                Ok(Verdict::Limited { retry_after }) => {
                    tracing::debug!(key = %name, ?retry_after, "rate limited (shared)");
                    shared
                        .over_limit
                        .remember(name, Instant::now() + retry_after);
                    return Ok(too_many_requests(retry_after, settings.limit.clone()));
                }
                Err(error) => {
                    shared.store_errors.fetch_add(1, Ordering::Relaxed);
                    match settings.fail {
                        FailMode::Open => {
                            tracing::warn!(%error, "rate limit store failed; letting the request through");
                            None
                        }
                        FailMode::Closed => {
                            tracing::warn!(%error, "rate limit store failed; refusing the request");
                            return Ok(unavailable());
                        }
                    }
                }
            };
            let mut response = inner.call(req).await?;
            if let Some(remaining) = remaining {
                let headers = response.headers_mut();
                if !headers.contains_key(RATELIMIT_LIMIT) {
                    headers.insert(RATELIMIT_LIMIT, settings.limit.clone());
                    headers.insert(RATELIMIT_REMAINING, HeaderValue::from(remaining));
                }
            }
            Ok(response.map(ResponseBody::inner))
        })
    }
}

/// The fail-closed `503`; no [`RateLimited`](super::RateLimited) extension: nothing was over
/// a limit.
fn unavailable<B>() -> Response<ResponseBody<B>> {
    let mut response = Response::new(ResponseBody::error(Bytes::from_static(
        UNAVAILABLE_JSON.as_bytes(),
    )));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}
