//! Tower layers and building blocks for streaming HTTP gateways.
//!
//! Nothing here knows about pingora or any application's API: the pieces work in any
//! tower-based server (hyper, axum, tonic). Redis appears only behind the `redis` feature,
//! as one backend of the rate limiter.
//!
//! - [`KeyExtractor`]: what a keyed layer (rate limit, existence cache, SSE fan-out) reads
//!   from a request.
//! - [`client`]: who sent a request (peer address, authenticated identity), as earlier
//!   layers established it; read by the rate limiter and the priority queue.
//! - [`error_body`]: the `{"error":{"code","message"}}` body every layer answers with.
//! - [`policy`]: every layer's settings as serde data with `validate()` (feature `policy`,
//!   serde only).
//! - [`existence_cache`]: cached, single-flight "does this key exist?" in front of a service.
//! - [`priority_queue`]: concurrency limit with a bounded priority queue answering `503`.
//! - [`rate_limit`]: per-key GCRA rate limiting answering `429` with `Retry-After`, buckets
//!   local or in Redis.
//! - [`sse`]: Server-Sent Events encoding and parsing; with `sse-fanout` and `sse-multiplex`,
//!   the fan-out and multiplexing layers.
//! - [`ServiceBuilderExt`]: the layers as `ServiceBuilder` methods (feature `builder`).
#![cfg_attr(docsrs, feature(doc_cfg))]

/// `get_ref`, `get_mut` and `into_inner` for a service holding its inner service as
/// `inner: S` (tower-http's accessors), written once for every layer's service.
#[allow(unused_macros)]
macro_rules! inner_service_accessors {
    () => {
        /// The inner service.
        pub fn get_ref(&self) -> &S {
            &self.inner
        }

        /// The inner service, mutably.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.inner
        }

        /// Unwraps the inner service.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
}
#[allow(unused_imports)]
pub(crate) use inner_service_accessors;

#[cfg(any(feature = "existence-cache", feature = "sse-fanout"))]
mod boxed_future;
#[cfg(feature = "builder")]
mod builder;
#[cfg(feature = "builder")]
pub use builder::ServiceBuilderExt;
#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "error-body")]
pub mod error_body;
#[cfg(feature = "existence-cache")]
pub mod existence_cache;
#[cfg(any(
    feature = "existence-cache",
    feature = "rate-limit",
    feature = "sse-fanout"
))]
mod key;
#[cfg(any(
    feature = "existence-cache",
    feature = "rate-limit",
    feature = "sse-fanout"
))]
pub use key::KeyExtractor;
#[cfg(feature = "policy")]
pub mod policy;
#[cfg(feature = "priority-queue")]
pub mod priority_queue;
#[cfg(feature = "rate-limit")]
pub mod rate_limit;
#[cfg(feature = "sse")]
pub mod sse;
