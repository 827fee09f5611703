//! [`SseFanoutLayer`] and [`SseFanout`]: the first request for a stream key calls the
//! inner service and shares its body; the others subscribe to it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Extensions, HeaderMap, Method, Request, Response, Uri, Version};
use http_body::Body;
use tower_layer::Layer;
use tower_service::Service;

use super::body::{FanoutBody, Resume};
use super::hub::{Channel, Head, Hub, start_pump};
use super::{BoxError, FanoutStats, REPLAYED_HEADERS};
use crate::KeyExtractor;
use crate::boxed_future::ResponseFuture;
use crate::policy::{FanoutPolicy, PolicyError};
use crate::sse::last_event_id;

/// Shares SSE responses among concurrent requests for the same stream; see the
/// [module docs](super).
pub struct SseFanoutLayer<K: KeyExtractor> {
    key: K,
    hub: Arc<Hub<K::Key>>,
}

impl<K: KeyExtractor> Clone for SseFanoutLayer<K> {
    fn clone(&self) -> Self {
        Self {
            key: self.key.clone(),
            hub: Arc::clone(&self.hub),
        }
    }
}

impl<K: KeyExtractor + std::fmt::Debug> std::fmt::Debug for SseFanoutLayer<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseFanoutLayer")
            .field("key", &self.key)
            .field("policy", &self.hub.policy)
            .finish_non_exhaustive()
    }
}

impl<K: KeyExtractor> SseFanoutLayer<K> {
    /// A layer sharing streams by `key` under `policy`.
    pub fn new(key: K, policy: FanoutPolicy) -> Result<Self, PolicyError> {
        policy.validate()?;
        Ok(Self {
            key,
            hub: Arc::new(Hub::new(policy)),
        })
    }

    /// Live counters of this layer (and every service it made).
    pub fn stats(&self) -> Arc<FanoutStats> {
        Arc::clone(&self.hub.stats)
    }

    /// Shared streams open now.
    pub fn streams(&self) -> usize {
        self.hub.len()
    }
}

impl<K: KeyExtractor> SseFanoutLayer<K> {
    /// Wraps `inner` (what [`Layer::layer`] does).
    pub fn layer<S>(&self, inner: S) -> SseFanout<S, K> {
        SseFanout {
            inner,
            key: self.key.clone(),
            hub: Arc::clone(&self.hub),
        }
    }
}

impl<S, K: KeyExtractor> Layer<S> for SseFanoutLayer<K> {
    type Service = SseFanout<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        SseFanoutLayer::layer(self, inner)
    }
}

impl<K: KeyExtractor> SseFanout<(), K> {
    /// A layer sharing streams by `key` under `policy` (same as [`SseFanoutLayer::new`]).
    pub fn layer(key: K, policy: FanoutPolicy) -> Result<SseFanoutLayer<K>, PolicyError> {
        SseFanoutLayer::new(key, policy)
    }
}

impl<S, K: KeyExtractor> SseFanout<S, K> {
    crate::inner_service_accessors!();
}

/// The service made by [`SseFanoutLayer`].
pub struct SseFanout<S, K: KeyExtractor> {
    inner: S,
    key: K,
    hub: Arc<Hub<K::Key>>,
}

impl<S: Clone, K: KeyExtractor> Clone for SseFanout<S, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            key: self.key.clone(),
            hub: Arc::clone(&self.hub),
        }
    }
}

impl<S: std::fmt::Debug, K: KeyExtractor + std::fmt::Debug> std::fmt::Debug for SseFanout<S, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseFanout")
            .field("inner", &self.inner)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// What is needed to make the same request again, from another cursor.
#[derive(Clone)]
struct Template {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    extensions: Extensions,
}

impl Template {
    fn of<B>(req: &Request<B>) -> Self {
        Self {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
            extensions: req.extensions().clone(),
        }
    }

    /// The request again, resuming after `cursor` (`Last-Event-ID`, which servers honour
    /// over any cursor in the query).
    fn request<B: Default>(&self, cursor: Option<&str>) -> Request<B> {
        let mut req = Request::new(B::default());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        *req.extensions_mut() = self.extensions.clone();
        let headers = req.headers_mut();
        headers.remove(LAST_EVENT_ID);
        if let Some(value) = cursor.and_then(|c| HeaderValue::from_str(c).ok()) {
            headers.insert(LAST_EVENT_ID, value);
        }
        req
    }
}

const LAST_EVENT_ID: &str = "last-event-id";

/// Whether a response is a stream worth sharing: `200` and `text/event-stream`.
fn is_event_stream<B>(response: &Response<B>) -> bool {
    response.status() == http::StatusCode::OK
        && response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(crate::sse::CONTENT_TYPE))
}

/// The leader's response headers that joiners get too: [`REPLAYED_HEADERS`] only.
fn replayed(leader: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for name in &REPLAYED_HEADERS {
        for value in leader.get_all(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

/// Closes a channel whose leader never got to start it (its call failed or was dropped),
/// so that waiting joiners make their own calls instead of waiting forever.
struct CloseUnlessStarted<K: KeyExtractor> {
    hub: Arc<Hub<K::Key>>,
    key: K::Key,
    channel: Arc<Channel>,
    armed: bool,
}

impl<K: KeyExtractor> Drop for CloseUnlessStarted<K> {
    fn drop(&mut self) {
        if self.armed {
            self.hub.close(&self.key, &self.channel);
        }
    }
}

impl<S, K, ReqBody, ResBody> Service<Request<ReqBody>> for SseFanout<S, K>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    K: KeyExtractor,
    ReqBody: Default + Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError> + std::fmt::Display,
{
    type Response = Response<FanoutBody<ResBody>>;
    type Error = BoxError;
    type Future = ResponseFuture<Self::Response, BoxError>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let Some(key) = self.key.extract(&req) else {
            let call = self.inner.call(req);
            return ResponseFuture::new(async move {
                let response = call.await.map_err(Into::into)?;
                Ok(response.map(FanoutBody::direct))
            });
        };
        let cursor = last_event_id(&req);
        let template = Template::of(&req);
        // The ready service makes this request's call; a clone stays for the next one and
        // another makes the own calls of subscribers that fall behind.
        let fresh = self.inner.clone();
        let for_resume = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, fresh);
        let hub = Arc::clone(&self.hub);
        ResponseFuture::new(async move {
            let resume = resume_with::<S, ReqBody, ResBody>(for_resume, template, &hub.stats);
            let (channel, leader) = hub.channel(&key, cursor.as_deref());
            if leader {
                let mut guard = CloseUnlessStarted::<K> {
                    hub: Arc::clone(&hub),
                    key: key.clone(),
                    channel: Arc::clone(&channel),
                    armed: true,
                };
                hub.stats.inner_calls.fetch_add(1, Ordering::Relaxed);
                let response = ready.call(req).await.map_err(Into::into)?;
                if !is_event_stream(&response) {
                    // Errors (404, 401...) are the requester's alone.
                    return Ok(response.map(FanoutBody::direct));
                }
                let (parts, body) = response.into_parts();
                let head = Head {
                    status: parts.status,
                    version: parts.version,
                    headers: replayed(&parts.headers),
                };
                start_pump(Arc::clone(&hub), key, Arc::clone(&channel), head, body);
                guard.armed = false;
                return match channel.join(cursor.as_deref()) {
                    Some(sub) => Ok(Response::from_parts(parts, FanoutBody::shared(sub, resume))),
                    // The ring moved past the start already (a burst bigger than the ring
                    // before this task ran again): read alone.
                    None => own_call(resume, cursor).await,
                };
            }
            drop(ready);
            match channel.opened().await {
                Some(head) => match channel.join(cursor.as_deref()) {
                    Some(sub) => {
                        let mut response = Response::new(FanoutBody::shared(sub, resume));
                        *response.status_mut() = head.status;
                        *response.version_mut() = head.version;
                        *response.headers_mut() = head.headers.clone();
                        Ok(response)
                    }
                    // A cursor the ring no longer (or never) held: its own call.
                    None => own_call(resume, cursor).await,
                },
                None => own_call(resume, cursor).await,
            }
        })
    }
}

/// The own inner call of a request that cannot join (or a subscriber that fell behind).
fn resume_with<S, ReqBody, ResBody>(
    service: S,
    template: Template,
    stats: &Arc<FanoutStats>,
) -> Resume<ResBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    ReqBody: Default + Send + 'static,
    ResBody: Send + 'static,
{
    let stats = Arc::clone(stats);
    Box::new(move |cursor: Option<String>| {
        Box::pin(async move {
            stats.inner_calls.fetch_add(1, Ordering::Relaxed);
            let mut service = service;
            std::future::poll_fn(|cx| service.poll_ready(cx))
                .await
                .map_err(Into::into)?;
            service
                .call(template.request(cursor.as_deref()))
                .await
                .map_err(Into::into)
        })
    })
}

async fn own_call<B>(
    resume: Resume<B>,
    cursor: Option<String>,
) -> Result<Response<FanoutBody<B>>, BoxError> {
    Ok(resume(cursor).await?.map(FanoutBody::direct))
}
