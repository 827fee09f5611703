//! [`UpstreamClient`]: a tower service that sends a request to a peer of an
//! [`UpstreamGroup`] over a pooled HTTP/1.1 client, for routes whose requests a tower layer
//! must see whole — e.g. upstream SSE streams shared by the fan-out layer, where N viewers
//! of one stream become one upstream request.
//!
//! The peer is chosen like pingora's: a healthy one, balanced by the group's policy with the
//! request's path and query as the hashing key (so one stream keeps going to one peer). A
//! refused connection is retried once on another healthy peer when the group allows
//! (`retry_connect`). Hop-by-hop headers are dropped both ways; the client address is
//! appended to `X-Forwarded-For`. A [`TraceContext`] in the request's extensions (the
//! gateway puts one there) becomes the upstream request's `traceparent` and `tracestate`.
//! No answer (no healthy peer, connection failed) is a `502` with a JSON error.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::BoxError;

use crate::ResponseBody;
use crate::bridge::{ClientAddr, RequestBody};
use crate::trace::TraceContext;
use crate::upstream::{UpstreamGroup, UpstreamSettings};

/// Sends requests to a peer of one upstream group; see the [module docs](self).
#[derive(Clone)]
pub struct UpstreamClient {
    group: Arc<UpstreamGroup>,
    client: Client<HttpConnector, RequestBody>,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient")
            .field("group", &self.group.name())
            .finish_non_exhaustive()
    }
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers the `Connection` header names are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::TRANSFER_ENCODING);
}

/// A pooled HTTP/1.1 client for the peers of a group with `settings`: connects within the
/// group's connect timeout (`TCP_NODELAY`), keeps idle connections for its idle timeout.
/// Shared by [`UpstreamClient`] and the gateway's HTTP tools.
pub fn pooled_client<B>(settings: &UpstreamSettings) -> Client<HttpConnector, B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(settings.connect_timeout));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(settings.idle_timeout)
        .build(connector)
}

impl UpstreamClient {
    /// A client of `group`'s peers (see [`pooled_client`]).
    pub fn new(group: Arc<UpstreamGroup>) -> Self {
        let client = pooled_client(group.settings());
        Self { group, client }
    }

    async fn send(self, req: Request<RequestBody>) -> Response<ResponseBody> {
        let (mut parts, body) = req.into_parts();
        let key = parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        strip_hop_by_hop(&mut parts.headers);
        if let Some(ClientAddr(addr)) = parts.extensions.get::<ClientAddr>() {
            let ip = addr.ip().to_string();
            let forwarded = match parts.headers.get("x-forwarded-for") {
                Some(before) => format!("{}, {ip}", String::from_utf8_lossy(before.as_bytes())),
                None => ip,
            };
            if let Ok(value) = HeaderValue::from_str(&forwarded) {
                parts.headers.insert("x-forwarded-for", value);
            }
        }
        if let Some(trace) = parts.extensions.get::<TraceContext>() {
            trace.inject(&mut parts.headers);
        }
        let attempts = if self.group.settings().retry_connect {
            2
        } else {
            1
        };
        let mut body = Some(body);
        let mut avoid = None;
        for attempt in 1..=attempts {
            let Some(peer) = self.group.select_by_key(key.as_bytes(), avoid) else {
                return bad_gateway("no healthy peer");
            };
            let Ok(uri) = Uri::try_from(format!("http://{peer}{key}")) else {
                return bad_gateway("bad request target");
            };
            let mut req = Request::new(body.take().unwrap_or_default());
            *req.method_mut() = parts.method.clone();
            *req.uri_mut() = uri;
            *req.headers_mut() = parts.headers.clone();
            match self.client.request(req).await {
                Ok(response) => {
                    let (mut head, incoming) = response.into_parts();
                    strip_hop_by_hop(&mut head.headers);
                    let body = incoming.map_err(BoxError::from).boxed_unsync();
                    return Response::from_parts(head, body);
                }
                // Only a refused connection is retried: the request never reached the peer,
                // and its (empty or unread) body was not consumed.
                Err(e) if e.is_connect() && attempt < attempts => {
                    tracing::debug!(%peer, error = %e, "upstream connect failed; retrying");
                    avoid = Some(peer);
                }
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "upstream request failed");
                    return bad_gateway("the upstream did not answer");
                }
            }
        }
        bad_gateway("the upstream did not answer")
    }
}

fn bad_gateway(message: &str) -> Response<ResponseBody> {
    let json = serde_json::json!({"error": {"code": "bad_gateway", "message": message}});
    let body = http_body_util::Full::new(Bytes::from(json.to_string()))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
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
        Box::pin(async move { Ok(this.send(req).await) })
    }
}
