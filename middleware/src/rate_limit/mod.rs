//! Rate limiting: a GCRA bucket per key, in process, answering `429` when a key is over.
//!
//! A [`KeyExtractor`] picks the key out of the request — everything ([`GlobalKey`]), the
//! client IP ([`PeerIpKey`]), a header ([`HeaderKey`]), the session id ([`SessionIdKey`]),
//! the authenticated client ([`ClientKey`]), or whichever a [`RateLimitPolicy`] names
//! ([`PolicyKey`]). Values the client chooses (headers, session ids) are normalised and
//! kept as a [`KeyDigest`], so a key never holds a credential nor the request's buffers. Each key gets the same
//! [`Quota`]: a bucket of `burst` requests refilled at `per_second`, one request every
//! `1 / per_second` seconds (governor's GCRA, no timer per key). Requests without a key are
//! not limited. [`RateLimitLayer`] keeps the buckets in the process: N gateway replicas allow
//! N times the rate. [`SharedRateLimitLayer`] keeps them in a store all replicas share
//! ([`SharedGcra`]; Redis with the `redis` feature: `RedisGcra`), with a local cache of
//! keys known to be over their limit and a choice of failing open or closed; see
//! [`shared`].
//!
//! **Over the limit** the layer answers itself and the inner service is not called:
//!
//! - status `429 Too Many Requests`, body
//!   `{"error":{"code":"rate_limited","message":"too many requests, retry later"}}`
//!   (`application/json`), and [`RateLimited`] in the response extensions;
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
//! decision is taken in `call`, which rejects at once and never waits. A rejected request
//! leaves the inner service ready and uncalled, as tower's `Filter` does.
//!
//! Memory: every key seen holds about 64 bytes until [`RateLimitLayer::prune`] drops the
//! keys whose bucket is full again (call it periodically, or
//! [`RateLimitLayer::spawn_pruner`]). At most `max_keys` keys are held
//! ([`RateLimitLayer::max_keys`], default [`DEFAULT_MAX_KEYS`]): a new key beyond them first
//! evicts the idlest keys (full buckets first), counted in [`BucketStats`].
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
pub mod error;
mod future;
mod key;
mod layer;
mod policy;
#[cfg(feature = "redis")]
mod redis;
mod service;
pub mod shared;

pub use crate::client::{ClientIdentity, PeerAddr};
pub use crate::json_error::ResponseBody;
pub use buckets::BucketStats;
pub use error::{PolicyError, RateLimited};
pub use future::ResponseFuture;
pub use governor::Quota;
pub use governor::clock::{DefaultClock, FakeRelativeClock};
pub use key::{
    ClientKey, GlobalKey, HeaderKey, KeyDigest, KeyName, LimitKey, PeerIpKey, PolicyKey,
    SessionIdKey,
};
pub use layer::{DEFAULT_MAX_KEYS, RateLimitLayer};
pub use policy::{FailMode, KeyKind, LimitStore, RateLimitPolicy};
#[cfg(feature = "redis")]
pub use redis::RedisGcra;
pub use service::RateLimitService;
pub use shared::{
    CheckFuture, GcraQuota, SharedGcra, SharedRateLimitLayer, SharedRateLimitService,
    SharedResponseFuture, StoreUnavailable, Verdict,
};

use std::hash::Hash;

use http::Request;

/// Picks the key a request is counted against. `None` means the request is not limited.
pub trait KeyExtractor: Clone {
    /// The key type; every distinct key has its own bucket.
    type Key: Clone + Eq + Hash + Send + Sync + 'static;

    /// The request's key, if it has one.
    fn extract<B>(&self, req: &Request<B>) -> Option<Self::Key>;
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod shared_tests;
