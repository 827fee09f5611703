//! The agent API as one tower [`Service`]: [`AgentApi`].
//!
//! One file per handler; this module holds the shared state, the route table and the
//! service that dispatches to the handlers. The URL layout lives here and in [`identity`]
//! (the layer at the top of the agent stack that reads a request's session once).
//!
//! | method, path | handler |
//! |---|---|
//! | `POST /v2/sessions` | [`init`] |
//! | `POST /v2/sessions/{id}/events` | [`events`] |
//! | `POST /v2/sessions/{id}/tools` | [`tools`] |
//! | `POST /v2/sessions/{id}/complete` | [`complete`] |
//! | `GET /v2/sessions/{id}` | [`session`] |
//! | `GET /v2/sessions/{id}/stream` | [`stream`] |
//! | `GET /v2/stream?sessions=a,b&tokens=ta,tb` | multiplexed stream: served by the `SseMultiplexLayer` the agent stack puts in front of this service ([`stream::demux`], `src/stack`); this service alone answers 501 |
//! | `GET /metrics`, `GET /healthz` | Prometheus text, liveness |
//!
//! Append and complete take an `Idempotency-Key` header: a retry with the same key
//! writes nothing and gets the first answer ([`idempotency`]).

pub mod body;
pub mod complete;
pub mod error;
pub mod events;
pub mod idempotency;
pub mod identity;
pub mod init;
pub mod session;
pub mod stream;
pub mod tools;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use agentgate_middleware::client::ClientIdentity;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, header};
use tokio_util::sync::CancellationToken;
use tower::Service;

pub use body::Body;
pub use error::ApiError;

use crate::agent::Dispatch;
use crate::auth::{ApiKeys, StreamTokens};
use crate::metrics::Metrics;
use crate::store::{SessionId, SessionStore};
use crate::tools::Executor;

/// Limits and timings the handlers apply.
#[derive(Debug, Clone, Copy)]
pub struct ApiSettings {
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: u64,
    /// Events read per store call while replaying a stream.
    pub replay_batch: usize,
    /// Interval of SSE heartbeat comments on an idle stream.
    pub heartbeat: Duration,
    /// SSE `retry:` sent to clients, in milliseconds.
    pub retry_ms: u64,
}

/// Everything the handlers share.
pub struct ApiState {
    /// Session storage.
    pub store: Arc<dyn SessionStore>,
    /// Keys allowed to call agent-side endpoints.
    pub keys: ApiKeys,
    /// Issues and checks stream tokens.
    pub tokens: StreamTokens,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Who runs a new session (the demo agent, or nobody: external agents).
    pub dispatch: Option<Arc<dyn Dispatch>>,
    /// Limits and timings.
    pub settings: ApiSettings,
    /// Cancelled at shutdown: open streams end cleanly.
    pub shutdown: CancellationToken,
    /// Runs tool batches (`POST /v2/sessions/{id}/tools`).
    pub tools: Arc<Executor>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ApiState {
    /// The fingerprint of the request's API key: the one the stack's identify stage
    /// verified (a [`ClientIdentity`] in the extensions, on routes whose policies read it),
    /// else the `Authorization: Bearer <api key>` header verified here. One hash per request.
    pub fn owner(
        &self,
        headers: &HeaderMap,
        extensions: &http::Extensions,
    ) -> Result<String, ApiError> {
        if let Some(client) = extensions.get::<ClientIdentity>() {
            return Ok(client.as_str().to_owned());
        }
        Ok(self.keys.verify(bearer(headers))?)
    }
}

/// The bearer credential of the `Authorization` header, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credential) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credential.trim())
}

/// The value of query parameter `name`, percent-decoded.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Which handler a request goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Init,
    Append(SessionId),
    Tools(SessionId),
    Complete(SessionId),
    State(SessionId),
    Stream(SessionId),
    Multiplex,
    Metrics,
    Health,
}

impl Route {
    /// Resolves method and path; 404 for unknown paths, 405 for wrong methods, 400 for an
    /// invalid session id (checked before anything else sees it).
    fn resolve(method: &Method, path: &str) -> Result<Self, ApiError> {
        // At most five segments matter; a longer path matches no route. No allocation.
        let mut parts = path.trim_start_matches('/').splitn(6, '/');
        let mut segments = [""; 6];
        let mut count = 0;
        for (slot, part) in segments.iter_mut().zip(&mut parts) {
            *slot = part;
            count += 1;
        }
        let segments = &segments[..count];
        let session = |raw: &str| {
            raw.parse::<SessionId>()
                .map_err(|e| ApiError::invalid("id", e))
        };
        let (route, allow) = match segments {
            ["metrics"] => (Self::Metrics, "GET"),
            ["healthz"] => (Self::Health, "GET"),
            ["v2", "sessions"] => (Self::Init, "POST"),
            ["v2", "stream"] => (Self::Multiplex, "GET"),
            ["v2", "sessions", id] => (Self::State(session(id)?), "GET"),
            ["v2", "sessions", id, "events"] => (Self::Append(session(id)?), "POST"),
            ["v2", "sessions", id, "tools"] => (Self::Tools(session(id)?), "POST"),
            ["v2", "sessions", id, "complete"] => (Self::Complete(session(id)?), "POST"),
            ["v2", "sessions", id, "stream"] => (Self::Stream(session(id)?), "GET"),
            _ => return Err(ApiError::no_route(path)),
        };
        let allowed = method.as_str() == allow || (allow == "GET" && method == Method::HEAD);
        if !allowed {
            return Err(ApiError::method_not_allowed(allow));
        }
        Ok(route)
    }

    /// Metric label.
    fn label(&self) -> &'static str {
        match self {
            Self::Init => "init",
            Self::Append(_) => "append",
            Self::Tools(_) => "tools",
            Self::Complete(_) => "complete",
            Self::State(_) => "state",
            Self::Stream(_) => "stream",
            Self::Multiplex => "multiplex",
            Self::Metrics => "metrics",
            Self::Health => "health",
        }
    }
}

/// The agent API as a tower service. Never fails: every error is a JSON response.
#[derive(Debug, Clone)]
pub struct AgentApi {
    state: Arc<ApiState>,
}

impl AgentApi {
    /// The service over shared state.
    pub fn new(state: Arc<ApiState>) -> Self {
        Self { state }
    }

    /// The shared state.
    pub fn state(&self) -> &Arc<ApiState> {
        &self.state
    }
}

impl<B> Service<Request<B>> for AgentApi
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
            let started = std::time::Instant::now();
            let (label, result) = match Route::resolve(req.method(), req.uri().path()) {
                Ok(route) => (route.label(), handle(&state, route, req).await),
                Err(e) => ("unknown", Err(e)),
            };
            let response = result.unwrap_or_else(ApiError::into_response);
            state.metrics.record_duration(label, started.elapsed());
            state
                .metrics
                .record_request(label, response.status().as_u16());
            Ok(response)
        })
    }
}

async fn handle<B>(
    state: &Arc<ApiState>,
    route: Route,
    req: Request<B>,
) -> Result<Response<Body>, ApiError>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match route {
        Route::Init => init::handle(state, req).await,
        Route::Append(id) => events::handle(state, &id, req).await,
        Route::Tools(id) => tools::handle(state, &id, req).await,
        Route::Complete(id) => complete::handle(state, &id, req).await,
        Route::State(id) => session::handle(state, &id, req.headers(), req.extensions()).await,
        Route::Stream(id) => stream::handle(state, id, &req.into_parts().0).await,
        Route::Multiplex => Err(ApiError::not_implemented(
            "GET /v2/stream (served by the SSE multiplex layer in front of this service)",
        )),
        Route::Metrics => {
            let mut response = Response::new(body::full(state.metrics.render()));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            Ok(response)
        }
        Route::Health => {
            let mut response = Response::new(body::full(Bytes::from_static(br#"{"status":"ok"}"#)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            Ok(response)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_resolve_and_reject() {
        let post = Method::POST;
        let get = Method::GET;
        assert_eq!(Route::resolve(&post, "/v2/sessions"), Ok(Route::Init));
        assert!(matches!(
            Route::resolve(&get, "/v2/sessions/abc/stream"),
            Ok(Route::Stream(_))
        ));
        assert_eq!(Route::resolve(&get, "/nope").unwrap_err().status, 404);
        assert_eq!(
            Route::resolve(&get, "/v2/sessions").unwrap_err().status,
            405
        );
        let bad = Route::resolve(&get, "/v2/sessions/a%7Bb/stream").unwrap_err();
        assert_eq!(bad.status, 400);
        assert!(bad.message.starts_with("id: "));
    }

    #[test]
    fn bearer_and_query() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
        assert_eq!(
            query_param(Some("a=1&token=x%2By"), "token").as_deref(),
            Some("x+y")
        );
        assert_eq!(query_param(None, "token"), None);
    }
}
