//! SSE fan-out: concurrent requests for the same stream share **one** inner call.
//!
//! A [`StreamKey`] says which stream a request asks for (say, the session of an
//! authenticated `GET /v2/sessions/{id}/stream`; the key must include whatever authorises
//! the request, since joiners are not checked by the inner service). Per key:
//!
//! - **The first request** (the leader) calls the inner service. A response that is not
//!   `200 text/event-stream` is the leader's alone (errors are not shared). Otherwise a
//!   pump task reads the body, parses it ([`Parser`](crate::sse::Parser)), keeps the last
//!   `replay_ring` events, and offers every frame to every subscriber.
//! - **Joiners** get the leader's status and headers, then, without an inner call: the
//!   stream's `retry:`, the ring's events after their `Last-Event-ID` (or `?last_event_id=`),
//!   and everything after. A cursor the ring does not hold (older, or unknown) gets its own
//!   inner call with that cursor. No gap, no duplicate: joining and publishing take the same
//!   lock.
//! - **Slow subscribers** have a queue of `subscriber_queue` frames. One that is full when an
//!   event comes is detached: it drains its queue, then continues through its own inner
//!   call from the last event it was given. The others never wait for it; memory per
//!   subscriber is bounded. (Heartbeat comments are skipped, not queued, for a full queue.)
//! - **When the last subscriber leaves**, the shared call is kept `linger_ms`, then dropped.
//!   When the inner stream ends, subscribers finish their queues and end.
//!
//! Resuming assumes events carry ids (`id:`), as the agent API's do; a detached subscriber
//! of a stream without ids continues without a cursor.
//!
//! The inner service must be `Clone` and its request body `Default` (re-issued requests are
//! bodyless `GET`s).

mod body;
mod hub;
mod policy;
mod service;

use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};

use http::Request;

pub use body::FanoutBody;
pub use policy::{FanoutPolicy, PolicyError};
pub use service::{FanoutFuture, SseFanoutLayer, SseFanoutService};

/// The error type of the fan-out service and body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which shared stream a request asks for. `None`: the request is not shared (passes
/// through to the inner service).
pub trait StreamKey: Clone + Send + Sync + 'static {
    /// Identifies one shared stream.
    type Key: Clone + Eq + Hash + Send + Sync + 'static;

    /// The stream `req` asks for, if it may share one.
    fn key<B>(&self, req: &Request<B>) -> Option<Self::Key>;
}

/// `GET` requests for the same path and query (minus `last_event_id`) **and the same
/// `Authorization` header** share a stream: the authorisation scope is part of the key, so
/// a joiner never sees a stream it did not present the credentials for.
#[derive(Debug, Clone, Copy, Default)]
pub struct PathAndAuth;

impl StreamKey for PathAndAuth {
    type Key = (String, Option<http::HeaderValue>);

    fn key<B>(&self, req: &Request<B>) -> Option<Self::Key> {
        if req.method() != http::Method::GET {
            return None;
        }
        let mut target = req.uri().path().to_owned();
        if let Some(query) = req.uri().query() {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|pair| !pair.starts_with("last_event_id="))
                .collect();
            if !kept.is_empty() {
                target.push('?');
                target.push_str(&kept.join("&"));
            }
        }
        let auth = req.headers().get(http::header::AUTHORIZATION).cloned();
        Some((target, auth))
    }
}

/// Live counters of an [`SseFanoutLayer`].
#[derive(Debug, Default)]
pub struct FanoutStats {
    /// Shared streams open now (one inner call each).
    pub streams: AtomicU64,
    /// Subscribers attached to shared streams now.
    pub subscribers: AtomicU64,
    /// Subscriptions made so far (joins served by a shared stream).
    pub joined: AtomicU64,
    /// Inner calls made so far: shared streams started, plus own calls (cursors the ring
    /// does not hold, detached subscribers).
    pub inner_calls: AtomicU64,
    /// Subscribers detached for falling behind, so far.
    pub detached: AtomicU64,
}

impl FanoutStats {
    /// (streams, subscribers, joined, inner calls, detached) now.
    pub fn snapshot(&self) -> (u64, u64, u64, u64, u64) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        (
            get(&self.streams),
            get(&self.subscribers),
            get(&self.joined),
            get(&self.inner_calls),
            get(&self.detached),
        )
    }
}

#[cfg(test)]
mod tests;
