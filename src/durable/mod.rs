//! The Durable Streams protocol route (`kind = "durable"`): [`DurableApi`].
//!
//! Every path under the route's `path_prefix` is a stream (the protocol leaves URLs to the
//! server). One file per operation:
//!
//! | method | what | file |
//! |---|---|---|
//! | `PUT` | create (idempotent; content type, `Stream-TTL` / `Stream-Expires-At`, initial body, `Stream-Closed`) | [`create`] |
//! | `POST` | append (`Stream-Seq`, idempotent producers, `Stream-Closed`) | [`append`] |
//! | `GET` | catch-up and `live=long-poll` reads | [`read`] |
//! | `GET ?live=sse` | Server-Sent Events: `data` and `control` events | [`sse`] |
//! | `HEAD`, `DELETE`, `OPTIONS` | metadata, deletion, CORS preflight | here |
//!
//! The handlers parse and bound the request and answer with the protocol's status codes
//! and headers; errors carry the gateway's one JSON error body ([`crate::api::error`]).
//! The store ([`StreamStore`]) applies each operation atomically.
//!
//! Authorisation: `[routes.durable] write` and `read` are `"api_key"` (an
//! `Authorization: Bearer` key of `[auth] api_keys`) or `"public"`. Stream-Seq is scoped per
//! stream. Bounds: body per request (`max_append_bytes`), stream size (`max_stream_bytes`),
//! streams held (`max_streams`), producers per stream (`max_producers`), bytes per read
//! (`max_read_bytes`), long-poll wait (`long_poll_timeout_ms`), SSE response length
//! (`sse_max_ms`), path length ([`MAX_PATH_BYTES`]), `Producer-Id` / `Stream-Seq` length
//! ([`headers::MAX_ID_BYTES`]).

pub mod append;
pub mod create;
pub mod cursor;
pub mod headers;
pub mod read;
pub mod sse;
pub mod tail;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio_util::sync::CancellationToken;
use tower::Service;

use crate::api::body::{Body, full};
use crate::api::{ApiError, bearer};
use crate::auth::ApiKeys;
use crate::store::durable::{Deleted, MAX_PATH_BYTES, StreamKey, StreamLimits, StreamStore};

/// Who may do what, and the bounds (from `[routes.durable]`).
#[derive(Debug, Clone, Copy)]
pub struct DurableSettings {
    /// Writes (`PUT`, `POST`, `DELETE`) need an API key.
    pub write_needs_key: bool,
    /// Reads (`GET`, `HEAD`) need an API key.
    pub read_needs_key: bool,
    /// Largest request body.
    pub max_append_bytes: u64,
    /// Most bytes per read response.
    pub max_read_bytes: u64,
    /// Long-poll wait.
    pub long_poll_timeout: Duration,
    /// Longest SSE response.
    pub sse_max: Duration,
    /// Longest `Stream-TTL`, seconds.
    pub max_ttl_secs: u64,
    /// What the store bounds.
    pub limits: StreamLimits,
}

/// Everything the handlers share.
pub struct DurableState {
    /// Where streams live.
    pub store: Arc<dyn StreamStore>,
    /// API keys (when a direction needs them).
    pub keys: ApiKeys,
    /// Bounds and authorisation.
    pub settings: DurableSettings,
    /// Cancelled at shutdown: live reads end.
    pub shutdown: CancellationToken,
    /// The route's `path_prefix`: a fork's source must lie under it.
    pub path_prefix: String,
    /// Live readers' store reads, shared (see [`tail`]).
    pub tail: tail::SharedReads,
}

impl std::fmt::Debug for DurableState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableState")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The protocol as a tower service. Never fails: every error is a response.
#[derive(Debug, Clone)]
pub struct DurableApi {
    state: Arc<DurableState>,
}

impl DurableApi {
    /// The service over shared state.
    pub fn new(state: DurableState) -> Self {
        Self {
            state: Arc::new(state),
        }
    }
}

impl<B> Service<Request<B>> for DurableApi
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let state = Arc::clone(&self.state);
        Box::pin(async move {
            let mut response = handle(&state, req)
                .await
                .unwrap_or_else(ApiError::into_response);
            browser_headers(response.headers_mut());
            Ok(response)
        })
    }
}

async fn handle<B>(state: &Arc<DurableState>, req: Request<B>) -> Result<Response<Body>, ApiError>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if req.method() == Method::OPTIONS {
        return Ok(empty(StatusCode::NO_CONTENT));
    }
    let path = req.uri().path();
    if path.len() > MAX_PATH_BYTES {
        return Err(ApiError::new(
            StatusCode::URI_TOO_LONG,
            "path_too_long",
            format!("path: longer than {MAX_PATH_BYTES} bytes"),
        ));
    }
    let key = StreamKey::new(path);
    let write = matches!(*req.method(), Method::PUT | Method::POST | Method::DELETE);
    let needs_key = if write {
        state.settings.write_needs_key
    } else {
        state.settings.read_needs_key
    };
    if needs_key {
        state.keys.verify(bearer(req.headers()))?;
    }
    match *req.method() {
        Method::PUT => create::handle(state, &key, req).await,
        Method::POST => append::handle(state, &key, req).await,
        Method::GET => read::handle(state, key, req.into_parts().0).await,
        Method::HEAD => head(state, &key).await,
        Method::DELETE => match state.store.delete(&key).await? {
            Deleted::Removed => Ok(empty(StatusCode::NO_CONTENT)),
            Deleted::Missing => Err(not_found()),
            Deleted::Gone => Err(gone()),
        },
        _ => Err(ApiError::method_not_allowed(
            "GET, HEAD, POST, PUT, DELETE, OPTIONS",
        )),
    }
}

/// `HEAD`: content type, tail, closure, TTL or expiry; never cached; does not refresh a TTL.
async fn head(state: &DurableState, key: &StreamKey) -> Result<Response<Body>, ApiError> {
    let info = state.store.info(key).await?.ok_or_else(not_found)?;
    if info.gone {
        return Err(gone());
    }
    let mut response = empty(StatusCode::OK);
    let h = response.headers_mut();
    read::describe(h, &info);
    set(h, headers::NEXT_OFFSET, &info.tail.to_string());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let etag = read::etag(key, "-1", info.tail, info.closed);
    set(h, "etag", &etag);
    if info.closed {
        set(h, headers::CLOSED, "true");
    }
    Ok(response)
}

/// 404: no such stream.
pub fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "stream_not_found",
        "stream not found (never created, deleted, or expired)",
    )
}

/// 410: the stream was deleted and is kept only for its forks.
pub fn gone() -> ApiError {
    ApiError::new(
        StatusCode::GONE,
        "stream_gone",
        "stream deleted (kept only while forks of it exist)",
    )
}

/// A response with no body.
pub fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// Sets header `name` to `value` when it is a valid header value (ours always are).
pub fn set(headers: &mut http::HeaderMap, name: impl header::IntoHeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// Reads the whole request body, at most `limit` bytes (413 past it; chunked bodies are
/// counted as they arrive).
pub async fn read_body<B>(body: B, limit: u64) -> Result<Bytes, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    match Limited::new(body, limit_usize).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(ApiError::too_large(limit)),
        Err(e) => Err(ApiError::invalid_body(format!("could not be read: {e}"))),
    }
}

/// The headers every answer carries: CORS for browser clients, and the browser security
/// headers of §12.7.
fn browser_headers(h: &mut http::HeaderMap) {
    let fixed = [
        ("access-control-allow-origin", "*"),
        (
            "access-control-allow-methods",
            "GET, POST, PUT, DELETE, HEAD, OPTIONS",
        ),
        ("access-control-allow-headers", headers::ALLOW_HEADERS),
        ("access-control-expose-headers", headers::EXPOSE_HEADERS),
        ("x-content-type-options", "nosniff"),
        ("cross-origin-resource-policy", "cross-origin"),
    ];
    for (name, value) in fixed {
        h.insert(name, HeaderValue::from_static(value));
    }
}
