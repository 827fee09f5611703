use agentgate_middleware::policy::PriorityQueuePolicy;
use agentgate_middleware::policy::RateLimitPolicy;
use serde::{Deserialize, Serialize};

use super::DurableConfig;

/// What a route does with the requests it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteKind {
    /// `"agent"`: the gateway's own agent API (sessions, SSE streams, metrics) answers.
    #[default]
    Agent,
    /// `"upstream"`: the request is proxied to the `[upstreams.NAME]` pool named by the
    /// route's `upstream` key.
    Upstream,
    /// `"sse"`: Server-Sent Events streams of the `[upstreams.NAME]` pool, shared: every
    /// viewer of one stream (same path and query, and the same credentials unless the route
    /// says `share = "public"`) reads one upstream connection (`[sse.fanout]`, with
    /// `features.sse_fanout`); resumes use `Last-Event-ID`.
    Sse,
    /// `"durable"`: the Durable Streams protocol, served by the gateway itself: every path
    /// under `path_prefix` is a stream (create with `PUT`, append with `POST`, read with
    /// `GET` catch-up, long-poll or SSE, `HEAD`, `DELETE`), kept in the `[store]`;
    /// `[routes.durable]` says who may write and read, and bounds it.
    Durable,
}

/// Who may share one upstream stream of a `kind = "sse"` route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SseShare {
    /// `"credentials"`: only viewers presenting the same credentials (`Authorization`,
    /// `Proxy-Authorization`, `Cookie` and the route's `credential_headers`, compared by
    /// value) share a stream; viewers with different ones get their own upstream request.
    #[default]
    Credentials,
    /// `"public"`: every viewer of the same path and query shares one stream, whatever
    /// credentials they present; the upstream sees only the first viewer's. For streams the
    /// upstream serves to anyone.
    Public,
}

/// One `[[routes]]` entry: which requests it matches and who answers them.
///
/// Routes are tried in file order and the first match wins. A route matches when every
/// condition it sets holds: `host`, `path_prefix` and `methods`. With no `[[routes]]` at all,
/// the gateway serves the agent API on every path (one implicit agent route); otherwise a
/// request that matches no route gets a JSON 404.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouteConfig {
    /// Name used in logs and metrics. Required: non-empty, only ASCII letters, digits, `_` and
    /// `-`, unique among routes. Default `""` (fails validation).
    pub name: String,
    /// `"agent"`, `"upstream"`, `"sse"` or `"durable"`. Default `"agent"`.
    pub kind: RouteKind,
    /// Host the request must be for: compared with the request's `Host` (or HTTP/2
    /// `:authority`) without its port, exactly and case-insensitively; no wildcards. A host
    /// name or IP address, IPv6 in brackets (`"[::1]"`), without scheme, port or path.
    /// Default unset: any host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Prefix the request path must start with, compared as a plain string (case-sensitive,
    /// no segment logic: `"/v2"` also matches `/v2x`; write `"/v2/"` to match only below
    /// `/v2/`). Must start with `/`. Default `"/"` (every path).
    pub path_prefix: String,
    /// HTTP methods the route accepts, upper-case, each one of `GET`, `HEAD`, `POST`, `PUT`,
    /// `DELETE`, `PATCH`, `OPTIONS`. Default `[]`: any method.
    pub methods: Vec<String>,
    /// Name of the `[upstreams.NAME]` pool to proxy to. Required with `kind = "upstream"`,
    /// not allowed with `kind = "agent"`. Default unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// `[routes.rate_limit]`: a per-key GCRA rate limit in front of this route (keys
    /// `per_second`, `burst`, `key` = `"global" | "peer_ip" | "header" | "session_id" |
    /// "api_key"`, `key_header`, `trusted_proxies`, `max_keys`). Over the limit: 429 with
    /// `Retry-After` and `RateLimit-*` headers. Default unset: not limited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitPolicy>,
    /// `[routes.priority_queue]`: at most `max_in_flight` requests of this route run at once
    /// (a slot is held until the response body ends); the rest wait in a bounded queue,
    /// highest priority (0-9: a trusted proxy's `x-priority`, else the API key's, else
    /// `default_priority`) first; when the queue is full
    /// a more important request evicts the least important waiter, which gets 503 with
    /// `Retry-After`, as does a request that waits past `max_wait_ms`. `stream_budget`
    /// gives streams (`streams`; default by route kind) slots of their own. `x-priority` is
    /// believed only from `trusted_proxies` and removed otherwise; `api_key_priorities`
    /// places API keys by fingerprint. Default unset: no queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority_queue: Option<PriorityQueuePolicy>,
    /// `[routes.canary]`: send a share of this route's traffic to a second upstream group
    /// (`kind = "upstream"` only). Sticky per session; pinnable by header or cookie. Default
    /// unset: every request goes to `upstream`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryConfig>,
    /// Who may share one upstream stream (`kind = "sse"` only): `"credentials"` or
    /// `"public"`. Whoever shares, a viewer joining a stream gets only the headers that
    /// describe it (content type, caching), never the first viewer's `Set-Cookie` or other
    /// per-client headers. Default `"credentials"`.
    pub share: SseShare,
    /// Request headers that carry credentials too, beyond `Authorization`,
    /// `Proxy-Authorization` and `Cookie` (e.g. `["x-api-key"]`): lower-case header names;
    /// viewers share a stream only if these are equal as well. `kind = "sse"` with
    /// `share = "credentials"` only. Default `[]`.
    pub credential_headers: Vec<String>,
    /// `[routes.durable]`: authorisation and bounds of a `kind = "durable"` route (only
    /// there). Default: the [`DurableConfig`] defaults (API keys for writes and reads).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub durable: Option<DurableConfig>,
}

/// `[routes.canary]`: a weighted second upstream group for safe rollouts (e.g. 95/5).
///
/// Which group serves a request, first rule that applies: the pin `header`, else the pin
/// `cookie`, says `canary` or `stable`; a request naming a session (`/v2/sessions/{id}/…`
/// or `x-session-id`) goes where the session's hash falls, so a session stays on one group
/// on every gateway node, and raising `weight` only moves sessions to the canary; any other
/// request is drawn by weight, and the response sets the pin cookie so the client stays
/// where it was drawn.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CanaryConfig {
    /// Name of the `[upstreams.NAME]` group taking the canary share. Required.
    pub upstream: String,
    /// Percent of sessions (and of unpinned requests without a session) sent to the
    /// canary: 0 to 100, up to two decimals (`0.5` is one in two hundred). Default 0: only
    /// pinned requests reach the canary.
    pub weight: f64,
    /// Request header pinning a group: value `canary` or `stable` (case-insensitive; other
    /// values are ignored). `""` turns header pinning off. Default `"x-agentgate-canary"`.
    pub header: String,
    /// Cookie pinning a group, with the same values; set by the gateway after a weighted
    /// draw (`Path=/`, one day, `HttpOnly`). `""` turns cookie pinning off. Default
    /// `"agentgate_canary"`.
    pub cookie: String,
}

impl Default for CanaryConfig {
    fn default() -> Self {
        Self {
            upstream: String::new(),
            weight: 0.0,
            header: "x-agentgate-canary".to_owned(),
            cookie: "agentgate_canary".to_owned(),
        }
    }
}

impl Default for RouteConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            kind: RouteKind::Agent,
            host: None,
            path_prefix: "/".to_owned(),
            methods: Vec::new(),
            upstream: None,
            rate_limit: None,
            priority_queue: None,
            canary: None,
            share: SseShare::Credentials,
            credential_headers: Vec::new(),
            durable: None,
        }
    }
}
