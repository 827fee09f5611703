//! SSE fan-out: concurrent requests for the same stream share **one** inner call.
//!
//! A [`KeyExtractor`](crate::KeyExtractor) says which stream a request asks for (say, the
//! session of an authenticated stream request, as an earlier layer verified it; the key
//! must include whatever authorises the request, since joiners are not checked by the
//! inner service: [`PathAndCredentials`]
//! shares a proxied stream only between requests presenting equal credentials, unless it is
//! declared [`Share::Public`]). Per key:
//!
//! - **The first request** (the leader) calls the inner service. A response that is not
//!   `200 text/event-stream` is the leader's alone (errors are not shared). Otherwise a
//!   pump task reads the body, parses it ([`Parser`](crate::sse::Parser)), keeps the last
//!   `replay_ring` events, and offers every frame to every subscriber.
//! - **Joiners** get the leader's status and its [`REPLAYED_HEADERS`] (never `Set-Cookie` or
//!   another per-client header), then, without an inner call: the
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
//! Resuming assumes events carry ids (`id:`); a detached subscriber
//! of a stream without ids continues without a cursor.
//!
//! The inner service must be `Clone` and its request body `Default` (re-issued requests are
//! bodyless `GET`s).
//!
//! # Example
//!
//! Two viewers of one stream; the inner service (an upstream, a handler) is called once:
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//!
//! use agentgate_middleware::sse::fanout::{FanoutPolicy, PathAndCredentials, Share, SseFanout};
//! use bytes::Bytes;
//! use futures_util::StreamExt;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Empty, StreamBody};
//! use http_body::Frame;
//! use tokio::sync::broadcast;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! // The inner service: every call opens an SSE stream of what `events` sends (`None`
//! // ends it).
//! let (events, _) = broadcast::channel::<Option<&'static str>>(16);
//! let calls = Arc::new(AtomicUsize::new(0));
//! let (sender, counted) = (events.clone(), Arc::clone(&calls));
//! let upstream = tower::service_fn(move |_req: Request<Empty<Bytes>>| {
//!     counted.fetch_add(1, Ordering::SeqCst);
//!     let frames = tokio_stream(sender.subscribe());
//!     async move {
//!         let response = Response::builder()
//!             .header("content-type", "text/event-stream")
//!             .body(StreamBody::new(frames))
//!             .expect("a response");
//!         Ok::<_, Infallible>(response)
//!     }
//! });
//! // Public: everyone asking for the same path shares it (the default compares credentials).
//! let fanout = SseFanout::layer(PathAndCredentials::new(Share::Public), FanoutPolicy::default())?;
//! let service = ServiceBuilder::new().layer(fanout).service(upstream);
//!
//! let get = || Request::get("/feed").body(Empty::<Bytes>::new()).expect("a request");
//! let first = service.clone().oneshot(get()).await?;
//! let second = service.clone().oneshot(get()).await?;
//! events.send(Some("id: 1\ndata: hello\n\n"))?;
//! events.send(None)?;
//! for viewer in [first, second] {
//!     let text = viewer.into_body().collect().await?.to_bytes();
//!     assert!(text.ends_with(b"id: 1\ndata: hello\n\n"));
//! }
//! assert_eq!(calls.load(Ordering::SeqCst), 1);
//! # Ok(())
//! # }
//! # // A broadcast receiver as a stream of body frames.
//! # fn tokio_stream(
//! #     rx: broadcast::Receiver<Option<&'static str>>,
//! # ) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static {
//! #     futures_util::stream::unfold(rx, |mut rx| async move {
//! #         let event = rx.recv().await.ok()??;
//! #         Some((Ok(Frame::data(Bytes::from_static(event.as_bytes()))), rx))
//! #     })
//! #     .boxed()
//! # }
//! ```

mod body;
mod hub;
mod key;
mod queue;
mod service;

use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderName, header};

pub use crate::boxed_future::ResponseFuture;
pub use crate::policy::{FanoutPolicy, PolicyError, Problem};
pub use body::FanoutBody;
pub use key::{Credentials, PathAndCredentials, Share};
pub use service::{SseFanout, SseFanoutLayer};

/// The error type of the fan-out service and body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response headers a joiner gets from the leader's response; every other header
/// (`Set-Cookie`, CORS headers answering the leader's `Origin`, anything an upstream sets
/// for one client) is the leader's alone. The status and these describe the stream, not
/// the client.
pub const REPLAYED_HEADERS: [HeaderName; 5] = [
    header::CONTENT_TYPE,
    header::CACHE_CONTROL,
    header::CONTENT_LANGUAGE,
    header::X_CONTENT_TYPE_OPTIONS,
    HeaderName::from_static("x-accel-buffering"),
];

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
