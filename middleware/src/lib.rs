//! Tower layers and building blocks for streaming HTTP gateways.
//!
//! Nothing here knows about pingora or agentgate's API: the pieces work in any tower-based
//! server (hyper, axum, tonic). Redis appears only behind the `redis` feature, as one store
//! for the shared rate limiter.
//!
//! - [`client`]: who sent a request (peer address, authenticated identity), as earlier
//!   layers established it; read by the rate limiter and the priority queue.
//! - [`existence_cache`]: cached, single-flight "does this key exist?" in front of a service.
//! - [`priority_queue`]: concurrency limit with a bounded priority queue answering `503`.
//! - [`rate_limit`]: per-key GCRA rate limiting answering `429` with `Retry-After`.
//! - [`sse`]: Server-Sent Events encoding and parsing; with `sse-fanout` and `sse-multiplex`,
//!   the fan-out and multiplexing layers.
//! - [`ServiceBuilderExt`]: the layers as `ServiceBuilder` methods (feature `builder`).
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

#[cfg(feature = "builder")]
mod builder;
#[cfg(feature = "builder")]
pub use builder::ServiceBuilderExt;
#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "existence-cache")]
pub mod existence_cache;
#[cfg(any(
    feature = "existence-cache",
    feature = "priority-queue",
    feature = "rate-limit"
))]
mod json_error;
#[cfg(feature = "priority-queue")]
pub mod priority_queue;
#[cfg(feature = "rate-limit")]
pub mod rate_limit;
#[cfg(feature = "sse")]
pub mod sse;
