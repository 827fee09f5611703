//! [`UpstreamClient`]: the tower service that sends a request to a peer of an
//! [`UpstreamGroup`] (or of its [canary](Canary)) and streams the answer back — what serves
//! `upstream` and `sse` routes behind the [bridge](crate::bridge), under the route's policy
//! layers (whose permits then simply live in the response body).
//!
//! Per request:
//! - the group: the canary's pick when the route has one (a pin cookie is set on the
//!   response after a weighted draw), else the route's group;
//! - the peer: a healthy one, balanced by the group's policy (pingora-load-balancing: round
//!   robin, or consistent hashing on a header or the request's
//!   [`Affinity`](crate::upstream::Affinity));
//! - the request goes out on a pooled keep-alive HTTP/1.1 connection (`TCP_NODELAY`,
//!   the group's connect timeout; idle connections kept for its idle timeout; over TLS
//!   when the group has [TLS](crate::UpstreamTls), see [`crate::peer_tls`]), its body
//!   streaming as the client sends it;
//! - a failed connect is retried once on another healthy peer when the group allows
//!   (`retry_connect`): nothing reached the peer, and the request body, never read, goes
//!   with the retry;
//! - headers: hop-by-hop ones dropped both ways (RFC 9110 §7.6.1), the client's address
//!   appended to `X-Forwarded-For`, `X-Forwarded-Proto` set, the [`TraceContext`] in the
//!   request's extensions (the gateway's) sent as `traceparent`/`tracestate`; the request id
//!   is already a request header (the gateway stamps it);
//! - the group's read timeout bounds the wait for the response head and every gap between
//!   two reads of its body (`504` for the head; a body cut mid-way ends the response);
//! - `Upgrade` (WebSocket and others) passes through: on `101 Switching Protocols` the two
//!   connections are joined both ways until either side closes;
//! - the answer carries an [`UpstreamPeer`] extension naming the group and peer, for logs.
//!
//! No answer (no healthy peer, connect failed, the peer broke the exchange) is a `502`
//! with a JSON error; a peer slower than the read timeout, a `504`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pingora_timeout::fast_timeout::{fast_sleep, fast_timeout};
use tower::BoxError;

use crate::ResponseBody;
use crate::bridge::{ClientAddr, ClientTls, ClientUpgrade, RequestBody};
use crate::canary::Canary;
use crate::peer_tls::PeerConnector;
use crate::trace::TraceContext;
use crate::upstream::UpstreamGroup;

/// The group and peer that answered a request, in the response's extensions.
#[derive(Debug, Clone)]
pub struct UpstreamPeer {
    /// The upstream group's name.
    pub group: Arc<str>,
    /// The peer's address.
    pub addr: SocketAddr,
}

/// Sends requests to a peer of one upstream group; see the [module docs](self).
/// Cheap to clone (one reference count).
#[derive(Clone)]
pub struct UpstreamClient(Arc<Inner>);

struct Inner {
    stable: Peers,
    canary: Option<(Arc<Canary>, Peers)>,
}

/// A group and the pooled client to its peers.
struct Peers {
    group: Arc<UpstreamGroup>,
    name: Arc<str>,
    client: PooledClient<ForwardBody>,
    /// Each peer's URI authority, built once.
    authorities: std::collections::HashMap<SocketAddr, http::uri::Authority>,
    /// Whether a failed connect can be retried: the group allows it and has another peer.
    retry: bool,
    /// `https` for a group with TLS (the connector decides; the URI says it for logs).
    scheme: http::uri::Scheme,
}

impl Peers {
    fn new(group: Arc<UpstreamGroup>) -> Self {
        let settings = group.settings();
        let authorities = settings
            .peers
            .iter()
            .filter_map(|peer| {
                let authority = http::uri::Authority::try_from(peer.to_string()).ok()?;
                Some((*peer, authority))
            })
            .collect();
        Self {
            client: pooled_client(&group),
            name: Arc::from(group.name()),
            authorities,
            retry: settings.retry_connect && settings.peers.len() > 1,
            scheme: if settings.tls.is_some() {
                http::uri::Scheme::HTTPS
            } else {
                http::uri::Scheme::HTTP
            },
            group,
        }
    }

    /// `http://{peer}{path?query}` (`https://` with TLS).
    fn uri(&self, peer: SocketAddr, target: &Uri) -> Option<Uri> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authorities.get(&peer)?.clone());
        parts.path_and_query = Some(
            target
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        );
        Uri::from_parts(parts).ok()
    }
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient")
            .field("group", &self.0.stable.group.name())
            .field(
                "canary",
                &self.0.canary.as_ref().map(|(c, _)| c.group().name()),
            )
            .finish_non_exhaustive()
    }
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// Removes the hop-by-hop headers; with `upgrade`, keeps `Upgrade` and sends
/// `Connection: upgrade` (the handshake the two ends negotiate through us).
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Headers the `Connection` header names are hop-by-hop too (rare: no allocation without).
    if headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| v.as_bytes().contains(&b','))
        || headers.get(header::CONNECTION).is_some_and(|v| {
            let v = v.as_bytes();
            !v.eq_ignore_ascii_case(b"keep-alive")
                && !v.eq_ignore_ascii_case(b"close")
                && !v.eq_ignore_ascii_case(b"upgrade")
        })
    {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::try_from(name.trim()).ok())
            .filter(|name| !(upgrade && name == header::UPGRADE))
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        if !(upgrade && name == header::UPGRADE) {
            headers.remove(name);
        }
    }
    headers.remove(header::TRANSFER_ENCODING);
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Whether the request asks to switch protocols (`Connection: upgrade` and `Upgrade`).
fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// A pooled HTTP/1.1 client of one upstream group's peers (see [`pooled_client`]).
pub type PooledClient<B> = Client<PeerConnector, B>;

/// A pooled HTTP/1.1 client for the peers of `group`: connects within the group's connect
/// timeout (`TCP_NODELAY`; over TLS when the group has it, whatever the URI's scheme),
/// keeps idle connections for its idle timeout. Shared by [`UpstreamClient`] and the
/// gateway's HTTP tools.
pub fn pooled_client<B>(group: &UpstreamGroup) -> PooledClient<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
{
    let settings = group.settings();
    let connector = PeerConnector::new(settings.connect_timeout, group.peer_tls().cloned());
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(settings.idle_timeout)
        .build(connector)
}

impl UpstreamClient {
    /// A client of `group`'s peers (see [`pooled_client`]).
    pub fn new(group: Arc<UpstreamGroup>) -> Self {
        Self(Arc::new(Inner {
            stable: Peers::new(group),
            canary: None,
        }))
    }

    /// Sends a share of the requests to the canary's group instead (see [`Canary`]).
    #[must_use]
    pub fn with_canary(self, canary: Option<Arc<Canary>>) -> Self {
        let canary = canary.map(|c| {
            let peers = Peers::new(Arc::clone(c.group()));
            (c, peers)
        });
        // Right after `new` the client is not shared yet: its pool is kept, not rebuilt.
        let stable = match Arc::try_unwrap(self.0) {
            Ok(inner) => inner.stable,
            Err(shared) => Peers::new(Arc::clone(&shared.stable.group)),
        };
        Self(Arc::new(Inner { stable, canary }))
    }

    async fn forward(self, req: Request<RequestBody>) -> Response<ResponseBody> {
        let this = &*self.0;
        let (mut parts, body) = req.into_parts();
        let (peers, pin_cookie) = match &this.canary {
            Some((canary, canary_peers)) => {
                let pick = canary.pick(&parts);
                let peers = if pick.is_canary() {
                    canary_peers
                } else {
                    &this.stable
                };
                (peers, canary.set_cookie(pick))
            }
            None => (&this.stable, None),
        };
        // An upgrade needs the client's bytes after the switch: the bridge hands them over
        // (HTTP/1.1 only); without them the request goes out as a plain one.
        let tunnel_in = wants_upgrade(&parts.headers)
            .then(|| parts.extensions.get::<ClientUpgrade>()?.take())
            .flatten();
        let upgrade = tunnel_in.is_some();
        strip_hop_by_hop(&mut parts.headers, upgrade);
        if let Some(ClientAddr(addr)) = parts.extensions.get::<ClientAddr>() {
            let forwarded = forwarded_for(parts.headers.get("x-forwarded-for"), addr.ip());
            parts.headers.insert("x-forwarded-for", forwarded);
        }
        let proto = if parts.extensions.get::<ClientTls>().is_some() {
            "https"
        } else {
            "http"
        };
        parts
            .headers
            .insert("x-forwarded-proto", HeaderValue::from_static(proto));
        if let Some(trace) = parts.extensions.get::<TraceContext>() {
            trace.inject(&mut parts.headers);
        }
        let retry = peers.retry;
        let read_timeout = peers.group.settings().read_timeout;
        let (mut body, reclaim) = ForwardBody::new(body, retry);
        let mut avoid = None;
        let mut attempt = 1;
        let (peer, response) = loop {
            let Some(peer) = peers.group.select(&parts, avoid) else {
                return error(
                    StatusCode::BAD_GATEWAY,
                    "no healthy peer in the upstream group",
                );
            };
            let mut req = Request::new(body);
            *req.method_mut() = parts.method.clone();
            *req.uri_mut() = match peers.uri(peer, &parts.uri) {
                Some(uri) => uri,
                None => return error(StatusCode::BAD_REQUEST, "invalid request target"),
            };
            *req.version_mut() = Version::HTTP_11;
            // The head is copied only when a retry may need it again.
            *req.headers_mut() = if retry && attempt == 1 {
                parts.headers.clone()
            } else {
                std::mem::take(&mut parts.headers)
            };
            let sent = peers.client.request(req);
            // pingora's coarse timers (10 ms ticks, shared, armed only if the wait is real):
            // a tokio timer per request would wake the runtime's driver once per request.
            let result = match read_timeout {
                Some(limit) => match fast_timeout(limit, sent).await {
                    Ok(result) => result,
                    Err(_) => {
                        tracing::warn!(%peer, "upstream sent no response head in time");
                        return error(
                            StatusCode::GATEWAY_TIMEOUT,
                            "the upstream did not answer in time",
                        );
                    }
                },
                None => sent.await,
            };
            match result {
                Ok(response) => break (peer, response),
                // Only a failed connect is retried: the request never reached the peer, and
                // its body, never read, is taken back for the retry.
                Err(e) if e.is_connect() && retry && attempt == 1 => {
                    match reclaim.as_ref().and_then(Reclaim::take) {
                        Some(unread) => body = unread,
                        None => {
                            tracing::warn!(%peer, error = %e, "upstream connect failed");
                            return error(StatusCode::BAD_GATEWAY, "the upstream did not answer");
                        }
                    }
                    tracing::debug!(%peer, error = %e, "upstream connect failed; retrying");
                    avoid = Some(peer);
                    attempt += 1;
                }
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "upstream request failed");
                    return error(StatusCode::BAD_GATEWAY, "the upstream did not answer");
                }
            }
        };
        tracing::Span::current().record("upstream", tracing::field::display(peer));
        let (mut head, incoming) = response.into_parts();
        let upgraded = upgrade && head.status == StatusCode::SWITCHING_PROTOCOLS;
        strip_hop_by_hop(&mut head.headers, upgraded);
        if let Some(cookie) = pin_cookie {
            head.headers.append(header::SET_COOKIE, cookie);
        }
        head.extensions.insert(UpstreamPeer {
            group: Arc::clone(&peers.name),
            addr: peer,
        });
        let body = match (upgraded, tunnel_in) {
            (true, Some(from_client)) => {
                let mut response = Response::from_parts(head, incoming);
                match hyper::upgrade::on(&mut response).await {
                    Ok(io) => {
                        let (head, _) = response.into_parts();
                        return Response::from_parts(head, tunnel(io, from_client));
                    }
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "upstream upgrade failed");
                        return error(StatusCode::BAD_GATEWAY, "the upstream upgrade failed");
                    }
                }
            }
            _ => match read_timeout {
                Some(limit) => TimedBody::new(incoming, limit).boxed_unsync(),
                None => incoming.map_err(BoxError::from).boxed_unsync(),
            },
        };
        Response::from_parts(head, body)
    }
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
    HeaderValue::from_maybe_shared(Bytes::from(buf))
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// A JSON error answer of this service (see [`crate::error_body`]).
fn error(status: StatusCode, message: &str) -> Response<ResponseBody> {
    let json = crate::error_body(status, message);
    agentgate_middleware::error_body::response(status, json, |json| {
        http_body_util::Full::new(json)
            .map_err(|never| match never {})
            .boxed_unsync()
    })
}

/// Joins the client and the peer after a `101`: the client's bytes (`from_client`, which the
/// bridge keeps feeding after the switch) are copied to the peer by a task, and the peer's
/// bytes are the response body. Either side closing ends its direction.
fn tunnel(io: hyper::upgrade::Upgraded, mut from_client: RequestBody) -> ResponseBody {
    use tokio::io::AsyncWriteExt;
    let (read, mut write) = tokio::io::split(TokioIo::new(io));
    tokio::spawn(async move {
        while let Some(frame) = from_client.frame().await {
            let Ok(data) = frame.map(Frame::into_data) else {
                break;
            };
            if let Ok(data) = data
                && write.write_all(&data).await.is_err()
            {
                break;
            }
        }
        let _ = write.shutdown().await;
    });
    let frames = futures_util::stream::unfold(read, |mut read| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = bytes::BytesMut::with_capacity(16 * 1024);
        match read.read_buf(&mut buf).await {
            Ok(0) => None,
            Ok(_) => Some((Ok(Frame::data(buf.freeze())), read)),
            Err(e) => Some((Err(BoxError::from(e)), read)),
        }
    });
    http_body_util::StreamBody::new(frames).boxed_unsync()
}

impl tower::Service<Request<RequestBody>> for UpstreamClient {
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<RequestBody>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.forward(req).await) })
    }
}

/// The body of a forwarded request: the client's, or — when a failed connect may be
/// retried — the client's behind a slot it can be taken back from while unread.
enum ForwardBody {
    Plain(RequestBody),
    Reclaimable {
        slot: Arc<Mutex<Option<RequestBody>>>,
        taken: Option<RequestBody>,
        hint: SizeHint,
    },
}

/// Takes the request body back after a failed connect.
enum Reclaim {
    /// A bodyless request: its retry sends an empty body again.
    Empty,
    /// The body's slot, emptied by its first read.
    Slot(Arc<Mutex<Option<RequestBody>>>),
}

impl Reclaim {
    /// The body, if nothing read it yet: wrapped again for the retry (which is the last).
    fn take(&self) -> Option<ForwardBody> {
        let body = match self {
            Self::Empty => RequestBody::empty(),
            Self::Slot(slot) => slot.lock().unwrap_or_else(|e| e.into_inner()).take()?,
        };
        Some(ForwardBody::Plain(body))
    }
}

impl ForwardBody {
    /// `body` ready to send; with `retry` (and a body to lose), the handle that takes it
    /// back. A bodyless request needs no slot: its retry sends an empty body again.
    fn new(body: RequestBody, retry: bool) -> (Self, Option<Reclaim>) {
        if !retry {
            return (Self::Plain(body), None);
        }
        if body.is_end_stream() {
            return (Self::Plain(body), Some(Reclaim::Empty));
        }
        let hint = body.size_hint();
        let slot = Arc::new(Mutex::new(Some(body)));
        let reclaim = Reclaim::Slot(Arc::clone(&slot));
        let body = Self::Reclaimable {
            slot,
            taken: None,
            hint,
        };
        (body, Some(reclaim))
    }
}

impl Body for ForwardBody {
    type Data = Bytes;
    type Error = crate::bridge::BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Self::Plain(body) => Pin::new(body).poll_frame(cx),
            Self::Reclaimable { slot, taken, .. } => {
                if taken.is_none() {
                    *taken = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                }
                match taken {
                    Some(body) => Pin::new(body).poll_frame(cx),
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Plain(body) => body.is_end_stream(),
            Self::Reclaimable { taken, .. } => {
                taken.as_ref().is_some_and(RequestBody::is_end_stream)
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Plain(body) => body.size_hint(),
            Self::Reclaimable { taken, hint, .. } => {
                taken.as_ref().map_or(*hint, RequestBody::size_hint)
            }
        }
    }
}

/// A peer's response body whose reads may be at most `limit` apart. The timer is armed
/// only while a read waits (a body whose frames are ready costs none), on pingora's coarse
/// shared timers.
struct TimedBody {
    inner: hyper::body::Incoming,
    limit: Duration,
    deadline: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl TimedBody {
    fn new(inner: hyper::body::Incoming, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            deadline: None,
        }
    }
}

/// The peer went silent for longer than its read timeout mid-body.
#[derive(Debug)]
struct ReadTimedOut(Duration);

impl std::fmt::Display for ReadTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the upstream sent nothing for {:?}", self.0)
    }
}

impl std::error::Error for ReadTimedOut {}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.deadline = None;
                Poll::Ready(frame.map(|f| f.map_err(BoxError::from)))
            }
            Poll::Pending => {
                let limit = this.limit;
                let deadline = this
                    .deadline
                    .get_or_insert_with(|| Box::pin(fast_sleep(limit)));
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(ReadTimedOut(limit).into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_dropped() {
        let mut h = headers(&[
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn an_upgrade_keeps_its_handshake() {
        let mut h = headers(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(wants_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert!(!wants_upgrade(&headers(&[("upgrade", "websocket")])));
    }

    #[test]
    fn forwarded_for_appends_the_client() {
        let ip = "10.0.0.9".parse().unwrap();
        assert_eq!(forwarded_for(None, ip), "10.0.0.9");
        let prior = HeaderValue::from_static("1.2.3.4");
        assert_eq!(forwarded_for(Some(&prior), ip), "1.2.3.4, 10.0.0.9");
    }

    #[tokio::test]
    async fn an_unread_body_is_taken_back_and_a_read_one_is_not() {
        let (body, reclaim) = ForwardBody::new(RequestBody::from_bytes("abc"), true);
        assert_eq!(body.size_hint().exact(), Some(3));
        drop(body);
        let again = reclaim.as_ref().and_then(Reclaim::take).unwrap();
        assert_eq!(&again.collect().await.unwrap().to_bytes()[..], b"abc");

        let (body, reclaim) = ForwardBody::new(RequestBody::from_bytes("abc"), true);
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"abc");
        assert!(reclaim.as_ref().and_then(Reclaim::take).is_none());
    }
}
