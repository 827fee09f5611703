//! agentgate's edge proxy on [pingora]: every route is a tower service served inside
//! pingora with streaming bodies — in-process handlers and load-balanced, health-checked
//! upstream groups alike, so one kind of stack (any tower layers) fronts both.
//!
//! pingora does what it is best at here: listeners, the HTTP server, graceful upgrade,
//! load balancing and health checks. Requests to upstreams go out through a tower service
//! on a pooled hyper client ([`client`]), not pingora's `ProxyHttp` proxy: the
//! route's layers then wrap the whole exchange (a queue permit lives in the response body).
//!
//! - [`bridge`]: serve a pingora request with any tower `Service` (streaming both ways).
//! - [`route`]: the route table: which service serves a request.
//! - [`upstream`]: load-balanced, health-checked upstream groups.
//! - [`peer_tls`]: TLS to a group's peers (server name, roots, the pooled client's
//!   connector).
//! - [`canary`]: a share of an upstream route's traffic to a second group, sticky per
//!   session, pinnable by header or cookie.
//! - [`client`]: the tower service sending requests to an upstream group (and its canary).
//! - [`path`]: the request-path normaliser run before routing (dot segments, percent
//!   encodings; ambiguous spellings refused).
//! - [`gateway`]: routing and serving every request through the bridge; one `tracing` span
//!   per request.
//! - [`http_app`]: the gateway as pingora's HTTP server application, the loop each request
//!   of a connection runs through (lean: none of pingora's proxy state).
//! - [`trace`]: W3C trace context (`traceparent`, `tracestate`) parsed and propagated.
//! - [`server`]: listeners, worker threads, drain-aware shutdown, graceful upgrade.
//! - [`listener`]: the listeners' connection caps and request-head deadline.
//! - [`tls`]: the TLS listeners' certificates, chosen by SNI, replaceable while serving.
//! - [`upgrade`]: the upgrade socket's receiving end, private to the gateway's user.
//!
//! This crate knows nothing of the agent API: the application hands it boxed services.
//!
//! # Hosting your own tower services in pingora
//!
//! Box any tower `Service<http::Request<`[`bridge::RequestBody`]`>>` (an axum `Router`, a
//! `ServiceBuilder` stack) with [`route_service`], put it on a [`Route`] of a
//! [`RouteTable`], and serve the table with an [`EdgeServer`]: `examples/axum.rs` is the
//! whole program (`cargo run -p agentgate-proxy --example axum`). To serve one request from
//! your own pingora application instead, call [`bridge::serve`] with the session and the
//! service.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod bridge;
pub mod canary;
pub mod client;

/// The body type of responses produced by routed services.
pub type ResponseBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, tower::BoxError>;

pub mod gateway;
pub mod http_app;
pub mod listener;
pub mod path;
pub mod peer_tls;
pub mod route;
pub mod server;
pub mod tls;
pub mod trace;
pub mod upgrade;
pub mod upstream;

pub use canary::Canary;
pub use client::{UpstreamClient, UpstreamPeer};
pub use gateway::Gateway;
pub use listener::{ConnectionCounts, ConnectionLimits, ConnectionStats};
pub use peer_tls::UpstreamTls;
pub use route::{LiveRoutes, Route, RouteService, RouteTable, route_service};
pub use server::{EdgeServer, ServerSettings, Stop, unix_signals};
pub use tls::{CertificateFiles, Certificates, TlsError};
pub use trace::{SpanLink, TraceContext};
pub use upstream::{Affinity, Balance, HashKey, HealthCheck, UpstreamGroup, UpstreamSettings};

/// An empty [`ResponseBody`].
pub fn empty_body() -> ResponseBody {
    use http_body_util::BodyExt;
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// The JSON body of an error answered by this crate
/// ([`agentgate_middleware::error_body`]): `{"error":{"code":"bad_gateway","message":"…"}}`,
/// the code being the status's reason phrase in snake case.
pub fn error_body(status: http::StatusCode, message: &str) -> bytes::Bytes {
    let code = status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase()
        .replace(' ', "_");
    agentgate_middleware::error_body::json(&code, message)
}
