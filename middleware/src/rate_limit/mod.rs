//! Rate limiting: a GCRA bucket per key, answering `429` when a key is over. One layer,
//! [`RateLimitLayer`], with two backends:
//!
//! - **local** ([`RateLimitLayer::new`], [`RateLimitLayer::from_policy`]): the buckets live
//!   in this process (governor's GCRA over a bounded map); N gateway replicas allow N times
//!   the rate.
//! - **shared** ([`RateLimitLayer::shared`], [`RateLimitLayer::shared_from_policy`]): the
//!   buckets live in a store every replica shares ([`SharedGcra`]; Redis with the `redis`
//!   feature: `RedisGcra`), with a local cache of keys known to be over their limit and a
//!   choice of failing open or closed ([`FailMode`]); see [`shared`].
//!
//! A [`KeyExtractor`](crate::KeyExtractor) picks the key out of the request — everything
//! ([`GlobalKey`]), the client IP ([`PeerIpKey`]), a header ([`HeaderKey`]), the session
//! an earlier layer named ([`SessionIdKey`]), the authenticated client ([`ClientKey`]), or
//! whichever a [`RateLimitPolicy`] names ([`PolicyKey`]). Values the client chooses
//! (headers, session ids) are normalised and kept as a [`KeyDigest`], so a key never holds
//! a credential nor the request's buffers. Each key gets the same [`Quota`]: a bucket of
//! `burst` requests refilled one request every `interval` (`1 / per_second`), no timer
//! per key. Requests without a key are not limited.
//!
//! **Over the limit** the layer answers itself and the inner service is not called:
//!
//! - status `429 Too Many Requests`, body
//!   `{"error":{"code":"rate_limited","message":"too many requests, retry later"}}`
//!   (`application/json`, [`crate::error_body`]), and [`RateLimited`] in the response
//!   extensions;
//! - `Retry-After`: seconds until the key may make one more request, rounded up, at least 1;
//! - `RateLimit-Limit`: the bucket size (`burst`);
//! - `RateLimit-Remaining: 0`;
//! - `RateLimit-Reset`: the same number as `Retry-After`. GCRA refills continuously, so
//!   there is no window reset; this is when the next request is allowed, not when the
//!   bucket is full again.
//!
//! (Header names from the IETF draft *RateLimit header fields for HTTP*, older
//! three-header form.) **Under the limit** the inner response is passed through, with
//! `RateLimit-Limit` and `RateLimit-Remaining` (requests the key may still make at once)
//! added unless the service set `RateLimit-Limit` itself.
//!
//! Readiness: the layer adds no capacity limit; `poll_ready` is the inner service's. The
//! decision is taken in `call` (local buckets: at once; shared buckets: the store's answer
//! is awaited in the response future, which then calls the inner service, so it keeps the
//! service that was polled ready and leaves a clone behind, hence `S: Clone`). The layer
//! rejects, it never waits for capacity. A rejected request leaves the inner service ready
//! and uncalled, as tower's `Filter` does.
//!
//! Memory (local buckets): every key seen holds about 64 bytes until
//! [`RateLimitLayer::prune`] drops the keys whose bucket is full again (call it
//! periodically, or [`RateLimitLayer::spawn_pruner`]). At most `max_keys` keys are held
//! ([`RateLimitLayer::max_keys`], default [`DEFAULT_MAX_KEYS`]): a new key beyond them first
//! evicts the idlest keys (full buckets first), counted in [`BucketStats`].
//!
//! # Why not tower_governor
//!
//! [tower_governor](https://crates.io/crates/tower_governor) 0.8 (the tower layer over the
//! same `governor` crate) was evaluated for the local backend and not adopted; it lacks:
//!
//! - **bounded memory**: its limiter is governor's `DashMapStateStore`, which grows with
//!   every distinct key until `retain_recent` is called (no `max_keys`, no eviction of the
//!   idlest keys, no key count for metrics), and it ships no pruning task;
//! - **our answers**: a rejection is `Retry-After` and `x-ratelimit-after` in *whole seconds
//!   rounded down* (a wait of 0.4 s says `Retry-After: 0`), with the non-standard
//!   `x-ratelimit-limit`/`-remaining` (and `x-ratelimit-whitelisted`) instead of the IETF
//!   `RateLimit-Limit`/`-Remaining`/`-Reset`, no marker extension like [`RateLimited`];
//!   its default body is plain text (a JSON 429 needs a custom error handler);
//! - **requests without a key**: an extractor that finds no key is an error the layer
//!   answers (`500 Unable To Extract Key!` by default); ours passes the request on
//!   unlimited (a header key on requests without the header, the session key on routes
//!   without sessions);
//! - **our key kinds**: trusted-proxy `X-Forwarded-For` walking (its `SmartIpKeyExtractor`
//!   believes `X-Forwarded-For`/`Forwarded` from any peer), normalised digests of
//!   credential headers, verified client identities with a per-IP fallback;
//! - **a shared backend**: buckets in Redis for a fleet, with an over-limit cache and a
//!   fail-open/closed choice;
//! - **tests on a fake clock**: its limiter is fixed to governor's `DefaultClock`.
//!
//! Extractors cross over both ways with the `tower-governor` feature: [`compat`] adapts a
//! tower_governor `KeyExtractor` to this crate's trait and back.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use agentgate_middleware::rate_limit::{RateLimitLayer, RateLimitPolicy};
//! use http::{Request, Response, StatusCode};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Two requests at once per API key, then one per second.
//! let policy: RateLimitPolicy = toml::from_str(
//!     r#"
//!     per_second = 1
//!     burst = 2
//!     key = "header"
//!     key_header = "x-api-key"
//!     "#,
//! ).unwrap();
//! let layer = RateLimitLayer::from_policy(&policy).unwrap();
//! let mut svc = ServiceBuilder::new().layer(layer).service_fn(|_req: Request<()>| async {
//!     Ok::<_, Infallible>(Response::new(String::from("hello")))
//! });
//! let request = || Request::get("/").header("x-api-key", "k1").body(()).unwrap();
//! for _ in 0..2 {
//!     let ok = svc.ready().await.unwrap().call(request()).await.unwrap();
//!     assert_eq!(ok.status(), StatusCode::OK);
//! }
//! let limited = svc.ready().await.unwrap().call(request()).await.unwrap();
//! assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
//! assert_eq!(limited.headers()["retry-after"], "1");
//! # }
//! ```

mod buckets;
#[cfg(feature = "tower-governor")]
pub mod compat;
pub mod error;
mod future;
mod key;
mod layer;
#[cfg(feature = "redis")]
mod redis;
mod service;
pub mod shared;

pub use crate::client::{ClientIdentity, PeerAddr};
pub use crate::error_body::ResponseBody;
pub use crate::policy::{DEFAULT_MAX_KEYS, FailMode, KeyKind, LimitStore, RateLimitPolicy};
pub use buckets::BucketStats;
pub use error::{PolicyError, Problem, RateLimited};
pub use future::ResponseFuture;
pub use governor::clock::{DefaultClock, FakeRelativeClock};
pub use key::{
    ClientKey, GlobalKey, HeaderKey, KeyDigest, KeyName, LimitKey, PeerIpKey, PolicyKey,
    SessionIdKey,
};
pub use layer::RateLimitLayer;
#[cfg(feature = "redis")]
pub use redis::RedisGcra;
pub use service::RateLimit;
pub use shared::{CheckFuture, SharedGcra, StoreUnavailable, Verdict};

use std::time::Duration;

/// What each key gets: a bucket of `burst` requests, refilled one request every
/// `interval`. Local and shared buckets take the same quota; governor's `Quota` converts
/// into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// One request's worth of capacity comes back every `interval` (`1 / per_second`).
    pub interval: Duration,
    /// Most requests a key may make at once.
    pub burst: u32,
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod shared_tests;
