//! [`SseMultiplexLayer`] and [`SseMultiplex`].

use std::collections::VecDeque;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use tower_layer::Layer;
use tower_service::Service;

use super::body::{Merge, MultiplexBody, Stream};
use super::cursor::Cursor;
use super::{Demux, DemuxError};
use crate::boxed_future::ResponseFuture;
use crate::policy::MultiplexPolicy;
use crate::sse::fanout::BoxError;
use crate::sse::{Parser, last_event_id};

/// Merges many SSE streams into one resumable response; see the [module docs](super).
#[derive(Debug, Clone)]
pub struct SseMultiplexLayer<D> {
    demux: D,
    policy: MultiplexPolicy,
}

impl<D: Demux> SseMultiplexLayer<D> {
    /// A layer splitting requests with `demux`, under `policy`. `max_streams` and
    /// `heartbeat_ms` below 1 count as 1.
    pub fn new(demux: D, policy: MultiplexPolicy) -> Self {
        Self { demux, policy }
    }
}

impl<D: Clone> SseMultiplexLayer<D> {
    /// Wraps `inner` (what [`Layer::layer`] does).
    pub fn layer<S>(&self, inner: S) -> SseMultiplex<S, D> {
        SseMultiplex {
            inner,
            demux: self.demux.clone(),
            policy: self.policy.clone(),
        }
    }
}

impl<S, D: Clone> Layer<S> for SseMultiplexLayer<D> {
    type Service = SseMultiplex<S, D>;

    fn layer(&self, inner: S) -> Self::Service {
        SseMultiplexLayer::layer(self, inner)
    }
}

impl<D: Demux> SseMultiplex<(), D> {
    /// A layer splitting requests with `demux`, under `policy` (same as
    /// [`SseMultiplexLayer::new`]).
    pub fn layer(demux: D, policy: MultiplexPolicy) -> SseMultiplexLayer<D> {
        SseMultiplexLayer::new(demux, policy)
    }
}

impl<S, D> SseMultiplex<S, D> {
    crate::inner_service_accessors!();
}

/// The service made by [`SseMultiplexLayer`].
#[derive(Debug, Clone)]
pub struct SseMultiplex<S, D> {
    inner: S,
    demux: D,
    policy: MultiplexPolicy,
}

/// `{"error":{"code":..,"message":..}}` with `status`.
fn error_response<B>(status: StatusCode, code: &str, message: &str) -> Response<MultiplexBody<B>> {
    let json = crate::error_body::json(code, message);
    crate::error_body::response(status, json, MultiplexBody::error)
}

fn invalid<B>(error: &DemuxError) -> Response<MultiplexBody<B>> {
    error_response(StatusCode::BAD_REQUEST, "invalid_field", &error.to_string())
}

/// Reads at most 4 KiB of a refused inner response, for the error message.
async fn error_text<B>(body: B) -> String
where
    B: Body<Data = Bytes>,
{
    let mut body = Box::pin(body);
    let mut text = Vec::new();
    while text.len() < 4096 {
        match std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    text.extend_from_slice(&data);
                }
            }
            _ => break,
        }
    }
    text.truncate(4096);
    String::from_utf8_lossy(&text).into_owned()
}

impl<S, D, ReqBody, ResBody> Service<Request<ReqBody>> for SseMultiplex<S, D>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    D: Demux,
    ReqBody: Default + Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<MultiplexBody<ResBody>>;
    type Error = BoxError;
    type Future = ResponseFuture<Self::Response, BoxError>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let parts = match self.demux.split(&req) {
            None => {
                let call = self.inner.call(req);
                return ResponseFuture::new(async move {
                    Ok(call.await.map_err(Into::into)?.map(MultiplexBody::inner))
                });
            }
            Some(Err(error)) => {
                return ResponseFuture::new(std::future::ready(Ok(invalid(&error))));
            }
            Some(Ok(parts)) => parts,
        };
        if req.method() != Method::GET {
            let mut response = error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "a multiplexed stream is read with GET",
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET"));
            return ResponseFuture::new(std::future::ready(Ok(response)));
        }
        let max = self.policy.max_streams.max(1);
        if parts.len() > max {
            let error = DemuxError {
                field: "streams".to_owned(),
                message: format!("{} requested, at most {max} per connection", parts.len()),
            };
            return ResponseFuture::new(std::future::ready(Ok(invalid(&error))));
        }
        let names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
        let cursor = match last_event_id(&req) {
            None => Cursor::start(&names),
            Some(text) => match Cursor::parse(&text, &names) {
                Ok(cursor) => cursor,
                Err(e) => {
                    let error = DemuxError {
                        field: "Last-Event-ID".to_owned(),
                        message: e.to_string(),
                    };
                    return ResponseFuture::new(std::future::ready(Ok(invalid(&error))));
                }
            },
        };
        // Each stream's request: its target and credentials, its own position, and the
        // original request's extensions (client address...).
        let requests: Vec<(String, Request<ReqBody>)> = parts
            .into_iter()
            .enumerate()
            .map(|(i, part)| {
                let mut inner = Request::new(ReqBody::default());
                *inner.uri_mut() = part.uri;
                *inner.headers_mut() = part.headers;
                *inner.extensions_mut() = req.extensions().clone();
                if let Some(value) = cursor
                    .position(i)
                    .and_then(|p| HeaderValue::from_str(p).ok())
                {
                    inner.headers_mut().insert("last-event-id", value);
                }
                inner.headers_mut().insert(
                    header::ACCEPT,
                    HeaderValue::from_static("text/event-stream"),
                );
                (part.name, inner)
            })
            .collect();
        let service = self.inner.clone();
        let heartbeat = Duration::from_millis(self.policy.heartbeat_ms.max(1));
        ResponseFuture::new(async move {
            let mut streams = Vec::with_capacity(requests.len());
            for (name, request) in requests {
                let mut service = service.clone();
                std::future::poll_fn(|cx| service.poll_ready(cx))
                    .await
                    .map_err(Into::into)?;
                let response = service.call(request).await.map_err(Into::into)?;
                if response.status() != StatusCode::OK {
                    let status = response.status();
                    let text = error_text(response.into_body()).await;
                    let message = format!("stream {name:?} refused ({status}): {text}");
                    return Ok(error_response(status, "stream_refused", &message));
                }
                streams.push(Stream {
                    name,
                    body: Some(Box::pin(response.into_body())),
                    parser: Parser::new(),
                });
            }
            let start = tokio::time::Instant::now() + heartbeat;
            let mut ticks = tokio::time::interval_at(start, heartbeat);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let merge = Merge {
                streams,
                cursor,
                out: VecDeque::new(),
                next: 0,
                heartbeat: ticks,
                retry_sent: false,
            };
            let mut response = Response::new(MultiplexBody::merged(merge));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(crate::sse::CONTENT_TYPE),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
            Ok(response)
        })
    }
}
