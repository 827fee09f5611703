//! Priority queueing: at most `max_in_flight` requests run; the rest wait in a bounded
//! queue, most important first, and are turned away with `503` rather than wait forever.
//!
//! A [`Classify`] implementation gives each request a priority (`u8`, higher runs first).
//! [`PolicyPriority`], what a [`PriorityQueuePolicy`] describes, gives `0..=9`: the
//! `x-priority` header only from trusted proxies (clamped; from anyone else it is removed
//! before the inner service), else the authenticated client's priority, else the route's
//! `default_priority`. Building blocks: a header from anyone ([`HeaderPriority`]), one for
//! all ([`Fixed`]). Within a priority, requests run in arrival order.
//!
//! **A slot is held until the response body ends** (or fails, or is dropped), not when
//! the headers arrive: the [`ResponseBody`] carries it. A streaming response is in flight
//! for as long as it streams. When a slot is released it is handed straight to the best
//! waiter, so a request arriving at that moment cannot jump the queue.
//!
//! **Streams** may get their own budget: with `stream_budget > 0`, requests the classifier
//! marks as streams ([`Classify::is_stream`]; for a policy, its [`StreamRule`]: by default
//! `GET` requests whose path ends in `/stream`, never the client's `Accept` alone) draw from
//! it instead of `max_in_flight`, so long-lived SSE cannot starve short requests. Each
//! budget has its own queue of up to `max_queue`.
//!
//! **Turned away** with `503 Service Unavailable`, `Retry-After: 1`, `application/json`
//! body `{"error":{"code":"overloaded","message":..}}` and [`Overloaded`] in the response
//! extensions, when:
//!
//! - the queue is full and the request is not more important than the least important
//!   waiter ([`OverloadReason::QueueFull`]); if it is, that waiter (the newest of the
//!   lowest class) is turned away instead ([`OverloadReason::Evicted`]);
//! - it waited `max_wait_ms` ([`OverloadReason::TimedOut`]).
//!
//! Memory is bounded by `max_queue` waiters per budget.
//!
//! **Observing**: [`PriorityQueueLayer::observed`] reports queue depth per priority, the
//! time each queued request waited for its slot, and sheds by reason to a
//! [`QueueObserver`] (the gateway feeds Prometheus with it).
//!
//! Readiness: capacity depends on the request (its priority), so it is **not** taken in
//! `poll_ready`, which is the inner service's. The request is placed in `call`; a queued
//! request waits in the response future, which then calls the inner service. To do so it
//! keeps the service that was polled ready and leaves a clone behind, hence `S: Clone`.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use agentgate_middleware::priority_queue::{PriorityQueueLayer, PriorityQueuePolicy};
//! use http::{Request, Response, StatusCode};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Eight requests at once; up to 100 wait, at most two seconds, by priority.
//! let policy: PriorityQueuePolicy = toml::from_str(
//!     r#"
//!     max_in_flight = 8
//!     max_queue = 100
//!     max_wait_ms = 2000
//!     "#,
//! ).unwrap();
//! let layer = PriorityQueueLayer::from_policy(&policy).unwrap();
//! let mut svc = ServiceBuilder::new().layer(layer.clone()).service_fn(|_req: Request<()>| async {
//!     Ok::<_, Infallible>(Response::new(http_body_util::Full::new(bytes::Bytes::from("hello"))))
//! });
//! let request = Request::get("/").body(()).unwrap();
//! let response = svc.ready().await.unwrap().call(request).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! // The slot is held until the body is done.
//! assert_eq!(layer.in_flight(), (1, 0));
//! drop(response);
//! assert_eq!(layer.in_flight(), (0, 0));
//! # }
//! ```

mod body;
mod classify;
pub mod error;
mod future;
mod layer;
mod observe;
mod queue;
mod service;

pub use crate::policy::{PriorityQueuePolicy, StreamRule};
pub use body::{Held, ResponseBody};
pub use classify::{AcceptEventStream, Fixed, HeaderPriority, MAX_PRIORITY, PolicyPriority};
pub use error::{OverloadReason, Overloaded, PolicyError, Problem};
pub use future::ResponseFuture;
pub use layer::PriorityQueueLayer;
pub use observe::{NoObserver, QueueObserver};
pub use service::PriorityQueue;

use http::Request;

/// Places a request: its priority and whether its response is a long-lived stream.
pub trait Classify<B>: Clone {
    /// The request's priority; higher runs first.
    fn classify(&self, req: &Request<B>) -> u8;

    /// Whether the request draws from the stream budget (if there is one). Default: no.
    fn is_stream(&self, req: &Request<B>) -> bool {
        let _ = req;
        false
    }

    /// Removes from the request what the classifier read but the inner service must not
    /// see (a priority header from a client that may not set one). Called after
    /// [`classify`](Self::classify) and [`is_stream`](Self::is_stream), before the request
    /// goes on. Default: nothing.
    fn strip(&self, req: &mut Request<B>) {
        let _ = req;
    }
}

#[cfg(test)]
mod tests;
