//! SSE multiplexing: one response follows many streams, each resumable exactly through the
//! one standard `Last-Event-ID`.
//!
//! A [`Demux`] recognises a multiplexed request and splits it into one inner request per
//! stream (with that stream's own credentials: the inner service authorises each as if it
//! came alone). The layer calls the inner service for each — through whatever is inside,
//! e.g. an [`SseFanoutLayer`](crate::sse::fanout::SseFanoutLayer), so every stream is shared
//! with its other viewers — and merges the event streams into one response.
//!
//! **Frames.** Every inner event becomes one event of the default type (`message`, so
//! `EventSource.onmessage` sees them all) whose data is an envelope naming its stream:
//!
//! ```text
//! id: 3f2a.1764200000000-4.1764200000007-0
//! data: {"stream":"a","id":"1764200000000-4","event":"delta","data":{"text":"hi"}}
//! ```
//!
//! `data` is the inner data itself when it is JSON, else a JSON string.
//!
//! **Resume.** Each frame's `id` is a [`Cursor`]: every stream's position after this frame.
//! A browser reconnecting with it as `Last-Event-ID` resumes every stream right after the
//! last event it got from that stream: no gap, no duplicate. A cursor that does not fit the
//! request (another list of streams, garbled, too long) is refused with `400` naming
//! `Last-Event-ID`.
//!
//! **Errors.** A bad request (no streams, too many, duplicates, malformed) is `400` naming
//! the parameter. If an inner request is refused (`401` bad credentials, `404` unknown...),
//! the whole request is answered with that status and a message naming the stream.
//!
//! **End.** One stream ending (its inner body ends) does not end the response; the response
//! ends when all have ended, or at once if an inner stream fails (the client reconnects and
//! resumes). Idle responses get a heartbeat comment every `heartbeat_ms`.
//!
//! # Example
//!
//! One response following two streams of an inner service:
//!
//! ```
//! use std::convert::Infallible;
//!
//! use agentgate_middleware::sse::multiplex::{MultiplexPolicy, QueryDemux, SseMultiplex};
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Empty, Full};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! // The inner service: `/feeds/{name}/events` is a short SSE stream.
//! let feeds = tower::service_fn(|req: Request<Empty<Bytes>>| async move {
//!     let name = req.uri().path().split('/').nth(2).unwrap_or_default().to_owned();
//!     let events = format!("id: 1\nevent: post\ndata: {{\"from\":\"{name}\"}}\n\n");
//!     let response = Response::builder()
//!         .header("content-type", "text/event-stream")
//!         .body(Full::new(Bytes::from(events)))
//!         .expect("a response");
//!     Ok::<_, Infallible>(response)
//! });
//! let demux = QueryDemux {
//!     path: "/feeds".to_owned(),
//!     streams_param: "names".to_owned(),
//!     tokens_param: "tokens".to_owned(),
//!     inner_path: "/feeds/{}/events".to_owned(),
//!     inner_token_param: "token".to_owned(),
//! };
//! let service = ServiceBuilder::new()
//!     .layer(SseMultiplex::layer(demux, MultiplexPolicy::default()))
//!     .service(feeds);
//!
//! let request = Request::get("/feeds?names=a,b").body(Empty::<Bytes>::new())?;
//! let response = service.oneshot(request).await?;
//! let body = response.into_body().collect().await?.to_bytes();
//! let text = String::from_utf8_lossy(&body);
//! // Each event in an envelope naming its stream; each frame's id resumes both.
//! assert!(text.contains(r#"data: {"stream":"a","id":"1","event":"post","data":{"from":"a"}}"#));
//! assert!(text.contains(r#"data: {"stream":"b","id":"1","event":"post","data":{"from":"b"}}"#));
//! # Ok(())
//! # }
//! ```

mod body;
pub mod cursor;
mod service;

use crate::sse::request::query_value;
use http::{HeaderMap, Request, Uri};

pub use crate::boxed_future::ResponseFuture;
pub use crate::policy::MultiplexPolicy;
pub use body::MultiplexBody;
pub use cursor::{Cursor, CursorError};
pub use service::{SseMultiplex, SseMultiplexLayer};

/// One stream of a multiplexed request: its name (as the envelope reports it) and the inner
/// request that reads it.
#[derive(Debug, Clone)]
pub struct StreamPart {
    /// Name of the stream in envelopes.
    pub name: String,
    /// Target of the inner `GET`.
    pub uri: Uri,
    /// Headers of the inner `GET` (credentials); `Last-Event-ID` is set by the layer.
    pub headers: HeaderMap,
}

/// Why a request cannot be split: `400` with `field: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemuxError {
    /// The request parameter at fault.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for DemuxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Recognises multiplexed requests and splits them into streams.
pub trait Demux: Clone + Send + Sync + 'static {
    /// `None`: not a multiplexed request (it passes through). Otherwise its streams, in
    /// order, or why the request is malformed.
    fn split<B>(&self, req: &Request<B>) -> Option<Result<Vec<StreamPart>, DemuxError>>;
}

/// `GET <path>?<streams_param>=a,b,c&<tokens_param>=ta,tb,tc` → `GET` of `inner_path` with
/// `{}` replaced by each name, each with its token as `?<inner_token_param>=` (say
/// `/feeds?names=a,b&tokens=ta,tb` → `/feeds/{}/events?token=..`).
///
/// Names must be 1 to 128 characters of ASCII letters, digits, `-` and `_`, without
/// duplicates; tokens are optional (then no credentials are passed), but if given there is
/// one per name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryDemux {
    /// Path of multiplexed requests.
    pub path: String,
    /// Query parameter listing the streams.
    pub streams_param: String,
    /// Query parameter listing one credential per stream.
    pub tokens_param: String,
    /// Inner path template; `{}` is the stream name.
    pub inner_path: String,
    /// Query parameter of the inner request carrying the credential.
    pub inner_token_param: String,
}

fn is_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_token(token: &str) -> bool {
    (1..=1024).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
}

impl Demux for QueryDemux {
    fn split<B>(&self, req: &Request<B>) -> Option<Result<Vec<StreamPart>, DemuxError>> {
        if req.uri().path() != self.path {
            return None;
        }
        Some(self.parts(req.uri().query().unwrap_or("")))
    }
}

impl QueryDemux {
    fn parts(&self, query: &str) -> Result<Vec<StreamPart>, DemuxError> {
        let error = |field: &str, message: String| DemuxError {
            field: field.to_owned(),
            message,
        };
        let names = query_value(query, &self.streams_param)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| error(&self.streams_param, "is required (a,b,c)".to_owned()))?;
        let names: Vec<&str> = names.split(',').collect();
        for (i, name) in names.iter().enumerate() {
            if !is_name(name) {
                return Err(error(
                    &self.streams_param,
                    format!("entry {i} {name:?} is not a valid name"),
                ));
            }
            if names[..i].contains(name) {
                return Err(error(
                    &self.streams_param,
                    format!("{name:?} is listed twice"),
                ));
            }
        }
        let tokens = query_value(query, &self.tokens_param);
        let tokens: Vec<Option<&str>> = match &tokens {
            None => vec![None; names.len()],
            Some(list) => {
                let list: Vec<&str> = list.split(',').collect();
                if list.len() != names.len() {
                    return Err(error(
                        &self.tokens_param,
                        format!("has {} entries for {} streams", list.len(), names.len()),
                    ));
                }
                if let Some(i) = list.iter().position(|t| !is_token(t)) {
                    return Err(error(
                        &self.tokens_param,
                        format!("entry {i} is not a valid token"),
                    ));
                }
                list.into_iter().map(Some).collect()
            }
        };
        names
            .iter()
            .zip(tokens)
            .map(|(name, token)| {
                let mut target = self.inner_path.replace("{}", name);
                if let Some(token) = token {
                    target = format!("{target}?{}={token}", self.inner_token_param);
                }
                let uri = target
                    .parse()
                    .map_err(|_| error(&self.streams_param, format!("{name:?}: bad target")))?;
                Ok(StreamPart {
                    name: (*name).to_owned(),
                    uri,
                    headers: HeaderMap::new(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
