//! agentgate's edge proxy on [pingora]: tower services served inside pingora with streaming
//! bodies, a route table, load-balanced and health-checked upstream groups, and tower
//! admission layers in front of proxying.
//!
//! - [`bridge`]: serve a pingora request with any tower `Service` (streaming both ways).
//! - [`route`]: the route table; service and upstream targets; admission stacks.
//! - [`upstream`]: load-balanced, health-checked upstream groups.
//! - [`canary`]: a share of an upstream route's traffic to a second group, sticky per
//!   session, pinnable by header or cookie.
//! - [`client`]: a tower service sending requests to an upstream group (for layers that
//!   need the whole exchange, like SSE fan-out).
//! - [`path`]: the request-path normaliser run before routing (dot segments, percent
//!   encodings; ambiguous spellings refused).
//! - [`gateway`]: the `ProxyHttp` implementation tying them together; one `tracing` span
//!   per request.
//! - [`trace`]: W3C trace context (`traceparent`, `tracestate`) parsed and propagated.
//! - [`server`]: listeners, worker threads, drain-aware shutdown, graceful upgrade.
//! - [`upgrade`]: the upgrade socket's receiving end, private to the gateway's user.
//!
//! This crate knows nothing of the agent API: the application hands it boxed services.

pub mod bridge;
pub mod canary;
pub mod client;

/// The body type of responses produced by routed services.
pub type ResponseBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, tower::BoxError>;

pub mod gateway;
pub mod path;
pub mod route;
pub mod server;
pub mod trace;
pub mod upgrade;
pub mod upstream;

pub use canary::Canary;
pub use client::UpstreamClient;
pub use gateway::Gateway;
pub use route::{
    AdmissionService, Admitted, AdmittedHeaders, LiveRoutes, Route, RouteService, RouteTable,
    Target, admit_all, route_service,
};
pub use server::{EdgeServer, ServerSettings, Stop, unix_signals};
pub use trace::{SpanLink, TraceContext};
pub use upstream::{Balance, HashKey, HealthCheck, UpstreamGroup, UpstreamSettings};

/// An empty [`ResponseBody`].
pub fn empty_body() -> ResponseBody {
    use http_body_util::BodyExt;
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}
