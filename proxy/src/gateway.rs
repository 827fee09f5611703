//! [`Gateway`]: the pingora `ProxyHttp` that routes every request.
//!
//! Phases, in pingora's order:
//! - `request_filter`: find the route (JSON 404 if none) and stamp an `x-request-id`
//!   (kept if the client sent one). A service route is served right here through the
//!   [bridge](crate::bridge). An upstream route first runs its admission stack: a rejection
//!   is written to the client; an admission is kept in the request context.
//! - `upstream_peer`: pick a healthy peer of the route's group (avoiding one that just
//!   refused a connection); `fail_to_connect` marks the error retryable once.
//! - `upstream_request_filter`: `X-Forwarded-For`, `X-Forwarded-Proto`, `x-request-id`.
//! - `logging`: the request is over; the admission (and any permit it holds) is dropped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use http::{HeaderValue, Request, Response, StatusCode};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};
use tokio::sync::Notify;
use tower::ServiceExt;

use crate::ResponseBody;
use crate::bridge::{self, RequestBody};
use crate::route::{Admitted, LiveRoutes, Route, Target};
use crate::upstream::{UpstreamGroup, session_id};

/// Name of the request id header.
pub const REQUEST_ID: &str = "x-request-id";

/// Routes requests to in-process services or upstream groups.
#[derive(Debug)]
pub struct Gateway {
    routes: LiveRoutes,
    request_ids: RequestIds,
    in_flight: Arc<InFlight>,
    access_log: bool,
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
        }
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
    /// The upstream group serving the request (the route's, or its canary).
    group: Option<Arc<UpstreamGroup>>,
    /// A canary pin cookie to set on the response.
    pin_cookie: Option<HeaderValue>,
    request_id: Option<HeaderValue>,
    /// The admission response, held (with whatever its layers attached) until `logging`.
    admission: Mutex<Option<Response<ResponseBody>>>,
    /// Upstream connection attempts so far.
    attempts: usize,
    /// A peer that refused a connection, avoided on the retry.
    failed_peer: Option<SocketAddr>,
    /// The last peer chosen for the request.
    peer: Option<SocketAddr>,
    /// When the request arrived.
    started: std::time::Instant,
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {
        // No response modules (pingora adds a disabled compression module by default): one
        // less filter on every response.
    }

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            _in_flight: self.in_flight.enter(),
            route: None,
            group: None,
            pin_cookie: None,
            request_id: None,
            admission: Mutex::new(None),
            attempts: 0,
            failed_peer: None,
            peer: None,
            started: std::time::Instant::now(),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
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
        let Some(route) = self.routes.find(session.req_header()) else {
            let path = session.req_header().uri.path().to_owned();
            bridge::write_error(
                session,
                StatusCode::NOT_FOUND,
                &format!("no route for {path}"),
                ctx.request_id.as_ref(),
            )
            .await?;
            return Ok(true);
        };
        match &route.target {
            Target::Service(service) => {
                let service = service.clone();
                ctx.route = Some(route);
                let mut extra = http::HeaderMap::new();
                if let Some(id) = &ctx.request_id {
                    extra.insert(REQUEST_ID, id.clone());
                }
                bridge::serve_with_headers(session, service, &extra).await?;
                Ok(true)
            }
            Target::Upstream {
                group,
                canary,
                admission,
            } => {
                ctx.group = Some(match canary {
                    Some(canary) => {
                        let pick = canary.pick(session.req_header());
                        ctx.pin_cookie = canary.set_cookie(pick);
                        if pick.is_canary() {
                            Arc::clone(canary.group())
                        } else {
                            Arc::clone(group)
                        }
                    }
                    None => Arc::clone(group),
                });
                let Some(admission) = admission else {
                    ctx.route = Some(route);
                    return Ok(false);
                };
                let parts = session.req_header().as_owned_parts();
                let mut request = Request::from_parts(parts, RequestBody::empty());
                if let Some(addr) = session.client_addr().and_then(|a| a.as_inet()) {
                    request.extensions_mut().insert(bridge::ClientAddr(*addr));
                }
                let response = admission.clone().oneshot(request).await;
                let name = route.name.clone();
                ctx.route = Some(route);
                match response {
                    Ok(r) if r.extensions().get::<Admitted>().is_some() => {
                        *ctx.admission.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                        Ok(false)
                    }
                    // A layer said no: its response goes to the client.
                    Ok(mut rejection) => {
                        if let Some(id) = ctx.request_id.clone() {
                            rejection.headers_mut().insert(REQUEST_ID, id);
                        }
                        bridge::respond(session, rejection).await?;
                        Ok(true)
                    }
                    Err(e) => {
                        tracing::error!(error = %e, route = %name, "admission failed");
                        bridge::write_error(
                            session,
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "internal error",
                            ctx.request_id.as_ref(),
                        )
                        .await?;
                        Ok(true)
                    }
                }
            }
        }
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let Some(group) = ctx.group.as_ref() else {
            return Error::e_explain(ErrorType::InternalError, "upstream_peer on a service route");
        };
        let Some(addr) = group.select(session.req_header(), ctx.failed_peer) else {
            return Error::e_explain(
                ErrorType::ConnectNoRoute,
                "no healthy peer in the upstream group",
            );
        };
        let peer = group.peer(addr);
        ctx.attempts += 1;
        ctx.peer = Some(addr);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let retry = ctx
            .group
            .as_ref()
            .is_some_and(|g| g.settings().retry_connect);
        if retry && ctx.attempts < 2 {
            ctx.failed_peer = peer._address.as_inet().copied();
            e.set_retry(true);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(client) = session.client_addr().and_then(|a| a.as_inet()) {
            let forwarded =
                forwarded_for(upstream_request.headers.get("x-forwarded-for"), client.ip());
            upstream_request.insert_header("x-forwarded-for", forwarded)?;
        }
        upstream_request.insert_header("x-forwarded-proto", "http")?;
        // x-request-id is already on the request: request_filter stamped it.
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(id) = &ctx.request_id {
            upstream_response.insert_header(REQUEST_ID, id.clone())?;
        }
        if let Some(cookie) = ctx.pin_cookie.take() {
            upstream_response.append_header(http::header::SET_COOKIE, cookie)?;
        }
        Ok(())
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, error: &Error) -> bool {
        // A client that hangs up mid-request is routine at the edge (load tools, browsers
        // navigating away), not an error worth a log line per request.
        matches!(error.esource(), pingora::ErrorSource::Downstream)
            && matches!(
                error.etype(),
                ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
            )
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        // The response has been sent (or failed): release what admission held.
        drop(ctx.admission.lock().map(|mut a| a.take()));
        if self.access_log {
            access_log(session, ctx);
        }
    }
}

/// One access log line for the finished request.
fn access_log(session: &Session, ctx: &RequestCtx) {
    let req = session.req_header();
    let path = req.uri.path();
    // The session a request is about: `/v2/sessions/{id}/...`, else `x-session-id`.
    let session_id = session_id(req)
        .and_then(|id| std::str::from_utf8(id).ok())
        .unwrap_or("");
    let status = session
        .response_written()
        .map_or(0, |response| response.status.as_u16());
    let request_id = ctx
        .request_id
        .as_ref()
        .and_then(|id| id.to_str().ok())
        .unwrap_or("");
    let route = ctx.route.as_ref().map_or("", |r| r.name.as_str());
    let upstream = ctx.peer.map(|p| p.to_string()).unwrap_or_default();
    let group = ctx.group.as_ref().map_or("", |g| g.name());
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

/// `X-Forwarded-For` with the client's address appended to what earlier proxies put there.
fn forwarded_for(prior: Option<&HeaderValue>, client: std::net::IpAddr) -> HeaderValue {
    use std::io::Write;
    let mut buf = Vec::with_capacity(64);
    if let Some(prior) = prior {
        buf.extend_from_slice(prior.as_bytes());
        buf.extend_from_slice(b", ");
    }
    // Writing into a Vec cannot fail; an IP address is always a valid header value.
    let _ = write!(buf, "{client}");
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
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
