//! Every route kind's whole request path, on one screen.
//!
//! One `ServiceBuilder` chain per route kind, outermost first, one comment per layer. A
//! layer the configuration switches off stays in the chain as an [`optional`] pass-through,
//! so a chain's shape never changes with the configuration, and nothing is boxed until the
//! route boundary ([`route_service`], once per route). [`crate::app`] turns the
//! configuration into the parts ([`Policies`], [`AgentParts`]); this module only composes.
//!
//! Above every chain sits the gateway ([`agentgate_proxy::Gateway`]): request id, path
//! normalisation, span and trace context, routing, and the bridge serving the chain inside
//! pingora, streaming both ways.

mod either;

use agentgate_middleware::client::{ClientIdentity, PeerAddr};
use agentgate_middleware::existence_cache::ExistenceCacheLayer;
use agentgate_middleware::priority_queue::{PolicyPriority, PriorityQueueLayer};
use agentgate_middleware::rate_limit::{PolicyKey, RateLimitLayer, RateLimited};
use agentgate_middleware::sse::fanout::{PathAndCredentials, SseFanoutLayer};
use agentgate_middleware::sse::multiplex::{QueryDemux, SseMultiplexLayer};
use agentgate_proxy::bridge::ClientAddr;
use agentgate_proxy::{RouteService, UpstreamClient, route_service};
use prometheus_client::metrics::counter::Counter;
use tower::ServiceBuilder;

pub use either::{Either, ResponseFuture, optional};

use crate::api::identity::SessionIdentityLayer;
use crate::api::stream::StreamSessionKey;
use crate::api::{AgentApi, bearer};
use crate::auth::{ApiKeys, StreamTokens};
use crate::durable::DurableApi;
use crate::store::{SessionId, StoreExistence};

/// A route's policy layers, each switched on by its TOML table.
#[derive(Clone, Default)]
pub struct Policies {
    /// The keys to verify for policies that read the client's identity (`key = "api_key"`,
    /// `api_key_priorities`); `None` when none does (no hashing per request).
    pub identify_keys: Option<ApiKeys>,
    /// `[routes.rate_limit]`: buckets in process, or shared in Redis by every gateway.
    pub rate_limit: Option<RateLimitLayer<PolicyKey>>,
    /// Counts the rate limiter's own `429`s.
    pub rejected: Option<Counter>,
    /// `[routes.priority_queue]`.
    pub priority_queue: Option<PriorityQueueLayer<PolicyPriority>>,
}

/// What the agent routes are made of, besides their policies.
#[derive(Clone)]
pub struct AgentParts {
    /// The handlers.
    pub api: AgentApi,
    /// Verifies stream tokens (once per connect, in the session layer).
    pub tokens: StreamTokens,
    /// `GET /v2/stream?sessions=a,b&tokens=ta,tb` split into one request per session.
    pub multiplex: SseMultiplexLayer<QueryDemux>,
    /// `features.existence_cache`.
    pub existence: Option<ExistenceCacheLayer<StreamSessionKey, SessionId, StoreExistence>>,
    /// `features.sse_fanout`.
    pub fanout: Option<SseFanoutLayer<StreamSessionKey>>,
}

/// An agent route: the agent API in process.
pub fn agent(parts: AgentParts, policies: Policies) -> RouteService {
    route_service(
        ServiceBuilder::new()
            // session: the id read and the stream token verified once, as extensions
            .layer(SessionIdentityLayer::new(parts.tokens.clone()))
            // identify: the peer address; the verified API key's fingerprint if a policy reads it
            .map_request(identify(policies.identify_keys))
            // count the rate limiter's 429s
            .map_response(count_rejections(policies.rejected))
            // rate limit: per-key GCRA, 429 before anything else runs
            .layer(optional(policies.rate_limit))
            // priority queue: bounded, classed waiting; the slot is held until the body ends
            .layer(optional(policies.priority_queue))
            // multiplex: one `GET /v2/stream` for many sessions, each through the rest
            .layer(parts.multiplex)
            // session again, for each multiplexed session's request (a no-op for the others)
            .layer(SessionIdentityLayer::new(parts.tokens))
            // existence cache: concurrent connects to one session share one lookup
            .layer(optional(parts.existence))
            // fan-out: every viewer of a session shares one store tail
            .layer(optional(parts.fanout))
            // the handlers ─► the session store
            .service(parts.api),
    )
}

/// An upstream route: a load-balanced upstream group (and its canary).
pub fn upstream(client: UpstreamClient, policies: Policies) -> RouteService {
    route_service(
        ServiceBuilder::new()
            // session: the id (path or x-session-id) for consistent hashing, canary, logs
            .layer(SessionIdentityLayer::ids_only())
            // identify: the peer address; the verified API key's fingerprint if a policy reads it
            .map_request(identify(policies.identify_keys))
            // count the rate limiter's 429s
            .map_response(count_rejections(policies.rejected))
            // rate limit: per-key GCRA, 429 before anything else runs
            .layer(optional(policies.rate_limit))
            // priority queue: bounded, classed waiting; the slot is held until the body ends
            .layer(optional(policies.priority_queue))
            // the pooled client: peer choice, retry, forwarding headers, timeouts, upgrades
            .service(client),
    )
}

/// An `sse` route: an upstream group serving event streams, shared among viewers.
pub fn sse(
    client: UpstreamClient,
    fanout: Option<SseFanoutLayer<PathAndCredentials>>,
    policies: Policies,
) -> RouteService {
    route_service(
        ServiceBuilder::new()
            // session: the id (path or x-session-id) for consistent hashing, canary, logs
            .layer(SessionIdentityLayer::ids_only())
            // identify: the peer address; the verified API key's fingerprint if a policy reads it
            .map_request(identify(policies.identify_keys))
            // count the rate limiter's 429s
            .map_response(count_rejections(policies.rejected))
            // rate limit: per-key GCRA, 429 before anything else runs
            .layer(optional(policies.rate_limit))
            // priority queue: every request is a stream here
            .layer(optional(policies.priority_queue))
            // fan-out: one upstream request per stream and credentials, whatever the viewers
            .layer(optional(fanout))
            // the pooled client: peer choice, retry, forwarding headers, timeouts
            .service(client),
    )
}

/// A `durable` route: the Durable Streams protocol, served in process from the store.
pub fn durable(api: DurableApi, policies: Policies) -> RouteService {
    route_service(
        ServiceBuilder::new()
            // identify: the peer address; the verified API key's fingerprint if a policy reads it
            .map_request(identify(policies.identify_keys))
            // count the rate limiter's 429s
            .map_response(count_rejections(policies.rejected))
            // rate limit: per-key GCRA, 429 before anything else runs
            .layer(optional(policies.rate_limit))
            // priority queue: bounded, classed waiting; the slot is held until the body ends
            .layer(optional(policies.priority_queue))
            // the protocol ─► the stream store (live readers share its one notification path)
            .service(api),
    )
}

/// Counts the rate limiter's own `429`s (marked [`RateLimited`]), not the service's.
fn count_rejections<B>(
    rejected: Option<Counter>,
) -> impl Fn(http::Response<B>) -> http::Response<B> + Clone {
    move |response| {
        if let Some(counter) = &rejected
            && response.extensions().get::<RateLimited>().is_some()
        {
            counter.inc();
        }
        response
    }
}

/// Tells the policy layers who sent the request: the bridge's client address as
/// [`PeerAddr`] and, with `keys`, the fingerprint of a verified `Authorization: Bearer` API
/// key as [`ClientIdentity`] (an unknown key gets none: the policies then treat the request
/// as unauthenticated).
fn identify<B>(keys: Option<ApiKeys>) -> impl Fn(http::Request<B>) -> http::Request<B> + Clone {
    move |mut req| {
        if let Some(ClientAddr(addr)) = req.extensions().get::<ClientAddr>().copied() {
            req.extensions_mut().insert(PeerAddr(addr));
        }
        if let Some(keys) = &keys
            && let Ok(fingerprint) = keys.verify(bearer(req.headers()))
        {
            req.extensions_mut()
                .insert(ClientIdentity::new(fingerprint));
        }
        req
    }
}
