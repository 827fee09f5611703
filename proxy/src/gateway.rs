//! [`Gateway`]: routes every request and serves it (pingora runs it as its HTTP server
//! application, [`crate::http_app`]).
//!
//! Every request is served in `request_filter`: stamp an `x-request-id` (kept if the
//! client sent one), normalise the path ([`path`](crate::path); JSON 400 for an ambiguous
//! one), open the request's span and trace context, find the route by the normal path (JSON
//! 404 if none), and serve it with the route's tower service through the
//! [`bridge`] — an in-process handler's stack or an upstream route's stack over
//! an [`UpstreamClient`](crate::UpstreamClient) alike; `logging` writes the access line.
//!
//! Failures of the client's side (it hung up, sent a broken body) are logged at DEBUG, not as
//! an ERROR line. Error lines name the request by method, path and host: never the query
//! string, which carries stream tokens.
//!
//! # Tracing
//!
//! Every request gets a `tracing` span, `request` at INFO (target `agentgate::request`), with
//! the fields `method`, `path`, `route`, `session`, `request_id`, `trace_id`, `status` and
//! `upstream`; the route's layers record `session` (the application's session layer) and
//! `upstream` (the [`UpstreamClient`](crate::UpstreamClient)). The span is kept in the
//! request context and instruments the whole service call through the bridge, so any log
//! line a handler, tool or the upstream client emits while serving carries the request id;
//! it closes when the context is dropped after `logging`. When no subscriber wants INFO
//! spans the span is disabled and nothing is formatted.
//!
//! The request's [`TraceContext`] joins the caller's W3C trace (a valid `traceparent`) or
//! starts one; it is sent upstream as `traceparent` and put in the extensions of requests to
//! in-process services. A [`SpanLink`] (OpenTelemetry, with agentgate's `otlp` feature)
//! makes the exported span and the propagated ids agree.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use http::{HeaderValue, StatusCode};
use pingora::http::RequestHeader;
use pingora::protocols::http::ServerSession;
use pingora::{Error, ErrorType, Result};
use tokio::sync::Notify;
use tracing::Instrument;

use agentgate_middleware::client::forwarded_client;

use crate::bridge;
use crate::client::UpstreamPeer;
use crate::listener::{self, Admission, Slot};
use crate::path::normalize;
use crate::route::{LiveRoutes, Route};
use crate::trace::{SpanLink, TraceContext};
use crate::upstream::Affinity;

/// Name of the request id header.
pub const REQUEST_ID: &str = "x-request-id";

/// Routes requests to in-process services or upstream groups.
#[derive(Debug)]
pub struct Gateway {
    routes: LiveRoutes,
    request_ids: RequestIds,
    in_flight: Arc<InFlight>,
    access_log: bool,
    span_link: Option<Arc<dyn SpanLink>>,
    connections: Option<ConnectionRules>,
}

/// The per-request side of the listeners' [`ConnectionLimits`](crate::ConnectionLimits).
#[derive(Debug)]
struct ConnectionRules {
    /// HTTP/1.1 keep-alive wait for the next request, in seconds (at least 1).
    idle_secs: u64,
    write_timeout: std::time::Duration,
    /// The caps, for requests forwarded by trusted proxies.
    admission: Arc<Admission>,
}

impl Gateway {
    /// A gateway over `routes`: a [`RouteTable`](crate::RouteTable), or [`LiveRoutes`] to
    /// replace the table while the gateway serves.
    pub fn new(routes: impl Into<LiveRoutes>) -> Self {
        Self {
            routes: routes.into(),
            request_ids: RequestIds::new(),
            in_flight: Arc::default(),
            access_log: false,
            span_link: None,
            connections: None,
        }
    }

    /// Applies the listeners' per-request limits (idle keep-alive, write timeout, the
    /// per-address cap for requests from trusted proxies) and counts their refusals.
    pub(crate) fn with_admission(mut self, admission: Arc<Admission>) -> Self {
        let limits = admission.limits();
        self.connections = Some(ConnectionRules {
            idle_secs: limits.idle_timeout.as_secs().max(1),
            write_timeout: limits.write_timeout,
            admission,
        });
        self
    }

    /// Links each request's span to a tracing backend (see [`SpanLink`]), so the trace ids
    /// propagated upstream are those the backend exports.
    pub fn with_span_link(mut self, link: Option<Arc<dyn SpanLink>>) -> Self {
        self.span_link = link;
        self
    }

    /// Logs one access line per request (target `agentgate::access`, level INFO) with the
    /// method, path, status, duration, bytes in and out, route, upstream peer, session id
    /// and request id as fields; a JSON log format makes them JSON fields.
    pub fn with_access_log(mut self, on: bool) -> Self {
        self.access_log = on;
        self
    }

    /// Requests in progress (the server waits for them when draining).
    pub fn in_flight(&self) -> Arc<InFlight> {
        Arc::clone(&self.in_flight)
    }
}

/// Counts requests in progress; [`InFlight::idle`] resolves when there are none.
#[derive(Debug, Default)]
pub struct InFlight {
    count: AtomicUsize,
    changed: Notify,
}

impl InFlight {
    /// Requests in progress now.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Resolves once no request is in progress.
    pub async fn idle(&self) {
        loop {
            let changed = self.changed.notified();
            if self.count() == 0 {
                return;
            }
            changed.await;
        }
    }

    fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(Arc::clone(self))
    }
}

/// One request in progress; dropped with the request context.
#[derive(Debug)]
struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.changed.notify_waiters();
        }
    }
}

/// Per-request state.
pub struct RequestCtx {
    _in_flight: InFlightGuard,
    route: Option<Arc<Route>>,
    request_id: Option<HeaderValue>,
    /// The upstream group and peer that answered, if any.
    peer: Option<UpstreamPeer>,
    /// The session the request was about, if its service named one (an [`Affinity`] in the
    /// response's extensions).
    session: Option<Affinity>,
    /// When the request arrived.
    started: std::time::Instant,
    /// The request's span (disabled until `request_filter` opens it).
    span: tracing::Span,
    /// The request's place in its distributed trace.
    trace: Option<TraceContext>,
    /// The request's place under its client's per-address cap, when a trusted proxy
    /// forwarded it.
    _address: Option<Slot>,
}

/// The request phases [`crate::http_app`] runs, in order: `new_ctx`, `request_filter` (which
/// serves the request), `suppress_error_log` and `request_summary` if it failed, `logging`.
impl Gateway {
    pub(crate) fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            _in_flight: self.in_flight.enter(),
            route: None,
            request_id: None,
            peer: None,
            session: None,
            started: std::time::Instant::now(),
            span: tracing::Span::none(),
            trace: None,
            _address: None,
        }
    }

    pub(crate) async fn request_filter(
        &self,
        session: &mut ServerSession,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        listener::head_received();
        if let Some(rules) = &self.connections {
            // Keep-alive is already off when the server is draining: leave it off.
            if session.get_keepalive().is_some() {
                session.set_keepalive(Some(rules.idle_secs));
            }
            // The bridge lifts it for a streaming response.
            session.set_write_timeout(Some(rules.write_timeout));
        }
        let request_id = match session.req_header().headers.get(REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let id = self.request_ids.next();
                session
                    .req_header_mut()
                    .insert_header(REQUEST_ID, id.clone())?;
                id
            }
        };
        ctx.request_id = Some(request_id);
        if let Some(client) = self.over_address_cap(session, ctx) {
            bridge::write_error(
                session,
                StatusCode::TOO_MANY_REQUESTS,
                &format!("too many connections from {client}"),
                ctx.request_id.as_ref(),
                Some(1),
            )
            .await?;
            return Ok(());
        }
        // Routing, the span, in-process services and the upstream all see the normal path.
        let normalized = normalize_target(session.req_header_mut());
        self.open_span(session.req_header(), ctx);
        if let Err(message) = normalized {
            bridge::write_error(
                session,
                StatusCode::BAD_REQUEST,
                &message,
                ctx.request_id.as_ref(),
                None,
            )
            .await?;
            return Ok(());
        }
        let Some(route) = self.routes.find(session.req_header()) else {
            let path = session.req_header().uri.path().to_owned();
            bridge::write_error(
                session,
                StatusCode::NOT_FOUND,
                &format!("no route for {path}"),
                ctx.request_id.as_ref(),
                None,
            )
            .await?;
            return Ok(());
        };
        ctx.span.record("route", route.name.as_str());
        let service = route.service.clone();
        ctx.route = Some(route);
        let mut extra = http::HeaderMap::new();
        if let Some(id) = &ctx.request_id {
            extra.insert(REQUEST_ID, id.clone());
        }
        let mut extensions = http::Extensions::new();
        if let Some(trace) = &ctx.trace {
            extensions.insert(trace.clone());
        }
        let mut answered = http::Extensions::new();
        // Handlers, tools and the upstream client log inside the request's span.
        let served =
            bridge::serve_with_extensions(session, service, extra, extensions, &mut answered)
                .instrument(ctx.span.clone())
                .await;
        ctx.peer = answered.remove::<UpstreamPeer>();
        ctx.session = answered.remove::<Affinity>();
        served
    }

    /// For a request a trusted proxy forwarded: takes its place under its client's
    /// per-address cap, or names the client when it is at the cap.
    fn over_address_cap(&self, session: &ServerSession, ctx: &mut RequestCtx) -> Option<IpAddr> {
        let rules = self.connections.as_ref()?;
        let trusted = &rules.admission.limits().trusted_proxies;
        if trusted.is_empty() {
            return None;
        }
        let peer = session.client_addr()?.as_inet()?.ip();
        if !trusted.contains(&peer) {
            return None;
        }
        let client = forwarded_client(peer, &session.req_header().headers, trusted);
        match rules.admission.hold(client) {
            Some(slot) => {
                ctx._address = Some(slot);
                None
            }
            None => Some(client),
        }
    }

    pub(crate) fn suppress_error_log(&self, ctx: &RequestCtx, error: &Error) -> bool {
        // The client's side failed: it hung up mid-request (a viewer closing its stream, a
        // load tool, a browser navigating away) or sent a broken body. Routine at the edge and
        // not the gateway's fault, so DEBUG instead of an ERROR line per request; the
        // access log still has the request and its status.
        if !matches!(error.esource(), pingora::ErrorSource::Downstream) {
            return false;
        }
        let _span = ctx.span.clone().entered();
        if matches!(
            error.etype(),
            ErrorType::ConnectionClosed
                | ErrorType::ReadError
                | ErrorType::WriteError
                | ErrorType::ReadTimedout
                | ErrorType::WriteTimedout
        ) {
            tracing::debug!(error = %error, "client went away");
        } else {
            tracing::debug!(error = %error, "client sent a broken request");
        }
        true
    }

    pub(crate) fn request_summary(&self, session: &ServerSession) -> String {
        // What ends an error line. pingora's own summary has the query string, which
        // carries stream tokens (`?token=`, `?tokens=`): the path only.
        let req = session.req_header();
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.host())
            .unwrap_or("-");
        format!("{} {}, Host: {host}", req.method, req.uri.path())
    }

    pub(crate) fn logging(&self, session: &ServerSession, e: Option<&Error>, ctx: &RequestCtx) {
        listener::request_done();
        if let (Some(rules), Some(e)) = (&self.connections, e)
            && e.etype() == &ErrorType::WriteTimedout
        {
            rules.admission.stats().write_timed_out();
        }
        let _span = ctx.span.clone().entered();
        let status = session
            .response_written()
            .map_or(0, |response| response.status.as_u16());
        ctx.span.record("status", i64::from(status));
        if self.access_log {
            access_log(session, ctx);
        }
        // The span closes when the context is dropped, right after this.
    }
}

impl Gateway {
    /// Opens the request's span and trace context (request id already stamped).
    fn open_span(&self, req: &RequestHeader, ctx: &mut RequestCtx) {
        let mut trace = TraceContext::from_headers(&req.headers);
        let span = tracing::info_span!(
            target: "agentgate::request",
            "request",
            method = %req.method,
            path = req.uri.path(),
            route = tracing::field::Empty,
            session = tracing::field::Empty,
            request_id = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            status = tracing::field::Empty,
            upstream = tracing::field::Empty,
        );
        if !span.is_disabled() {
            if let Some(id) = ctx.request_id.as_ref().and_then(|id| id.to_str().ok()) {
                span.record("request_id", id);
            }
            if let Some(link) = &self.span_link
                && let Some(ids) = link.link(&span, trace.parent(), trace.tracestate())
            {
                trace = trace.with_span_ids(ids);
            }
            span.record("trace_id", tracing::field::display(trace.trace_id()));
        }
        ctx.span = span;
        ctx.trace = Some(trace);
    }
}

/// Rewrites the request's target to its [normal path](crate::path) (query untouched), the
/// one every later phase reads and the upstream receives; or says why it is refused.
///
/// A target that is not origin-form (absolute-form `http://host/path`, or one pingora could
/// not classify) is rewritten to origin-form too: pingora would otherwise send its raw
/// bytes upstream, not the path the route table matched.
fn normalize_target(req: &mut RequestHeader) -> std::result::Result<(), String> {
    if !req.raw_path_is_utf8() {
        return Err("invalid request path: it is not valid UTF-8".to_owned());
    }
    let normal = normalize(req.uri.path()).map_err(|e| e.to_string())?;
    let origin_form = req
        .uri
        .path_and_query()
        .is_some_and(|pq| pq.as_str().as_bytes() == req.raw_path());
    if matches!(normal, Cow::Borrowed(_)) && origin_form {
        return Ok(());
    }
    let target = match req.uri.query() {
        Some(query) => format!("{normal}?{query}"),
        None => normal.into_owned(),
    };
    // Scheme and authority (HTTP/2 `:authority`) stay: host routing reads them.
    let mut parts = req.uri.clone().into_parts();
    parts.path_and_query = Some(
        http::uri::PathAndQuery::try_from(target)
            .map_err(|_| "invalid request path: it cannot be normalised".to_owned())?,
    );
    let uri = http::Uri::from_parts(parts)
        .map_err(|_| "invalid request path: it cannot be normalised".to_owned())?;
    req.set_uri(uri);
    Ok(())
}

/// One access log line for the finished request.
fn access_log(session: &ServerSession, ctx: &RequestCtx) {
    let req = session.req_header();
    let path = req.uri.path();
    let status = session
        .response_written()
        .map_or(0, |response| response.status.as_u16());
    let request_id = ctx
        .request_id
        .as_ref()
        .and_then(|id| id.to_str().ok())
        .unwrap_or("");
    let route = ctx.route.as_ref().map_or("", |r| r.name.as_str());
    let upstream = ctx
        .peer
        .as_ref()
        .map(|p| p.addr.to_string())
        .unwrap_or_default();
    let group = ctx.peer.as_ref().map_or("", |p| &*p.group);
    let session_id = ctx
        .session
        .as_ref()
        .and_then(|Affinity(id)| std::str::from_utf8(id).ok())
        .unwrap_or("");
    tracing::info!(
        target: "agentgate::access",
        method = %req.method,
        path,
        status,
        duration_ms = ctx.started.elapsed().as_secs_f64() * 1000.0,
        bytes_in = session.body_bytes_read(),
        bytes_out = session.body_bytes_sent(),
        route,
        upstream = %upstream,
        group,
        session = session_id,
        request_id,
        "access"
    );
}

/// Request ids: a random per-process prefix and a counter — unique, cheap, no allocation
/// beyond the header value.
#[derive(Debug)]
struct RequestIds {
    prefix: u64,
    counter: AtomicU64,
}

impl RequestIds {
    fn new() -> Self {
        // Seed from the clock and address-space layout; uniqueness, not secrecy, is the goal.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let local = 0u8;
        let addr = std::ptr::addr_of!(local) as u64;
        Self {
            prefix: nanos ^ addr.rotate_left(29) ^ u64::from(std::process::id()),
            counter: AtomicU64::new(0),
        }
    }

    fn next(&self) -> HeaderValue {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        // 16 hex digits of prefix, 8 of counter, written without a heap string.
        let mut id = [0u8; 24];
        hex(&mut id[..16], self.prefix);
        hex(&mut id[16..], n);
        // Hex digits are always a valid header value.
        HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("0"))
    }
}

/// Writes the low `out.len()` hex digits of `value` into `out`.
fn hex(out: &mut [u8], mut value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(value & 0xf) as usize];
        value >>= 4;
    }
}
