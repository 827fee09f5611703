//! [`ResponseFuture`]: waits for the shared store's verdict (Redis backend), then calls the
//! inner service and adds the `RateLimit-*` headers; or the ready `429` (or fail-closed
//! `503`).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_service::Service;

use super::error::RateLimited;
use super::shared::{CheckFuture, SharedBuckets, Verdict};
use crate::error_body::{self, ResponseBody};
use crate::policy::FailMode;

/// `RateLimit-Limit`: the bucket size (burst) of the key's quota.
const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
/// `RateLimit-Remaining`: requests the key may still make at once.
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
/// `RateLimit-Reset`: seconds until the key may make one more request.
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Why the layer answered a request itself.
#[derive(Debug)]
pub(crate) enum Rejection {
    /// Over the limit: `429`.
    Limited {
        retry_after: Duration,
        /// `RateLimit-Limit`.
        limit: HeaderValue,
    },
    /// The shared store failed and the layer fails closed: `503`.
    Unavailable,
}

pin_project! {
    /// Future of a [`RateLimit`](super::RateLimit) call.
    pub struct ResponseFuture<S, R>
    where
        S: Service<R>,
    {
        #[pin]
        kind: Kind<S, R>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, R>
    where
        S: Service<R>,
    {
        // Shared buckets: the store's verdict, then the ready service and the request.
        Checking {
            check: CheckFuture,
            buckets: Arc<SharedBuckets>,
            name: String,
            limit: HeaderValue,
            pending: Option<(S, R)>,
        },
        // Allowed (or not limited): the inner call, and the headers to add to its response.
        Calling {
            #[pin]
            future: S::Future,
            headers: Option<(HeaderValue, HeaderValue)>,
        },
        // Answered by the layer.
        Rejected {
            rejection: Option<Rejection>,
        },
    }
}

impl<S: Service<R>, R> ResponseFuture<S, R> {
    /// The inner call; `headers` are `RateLimit-Limit` and `RateLimit-Remaining`.
    pub(crate) fn calling(future: S::Future, headers: Option<(HeaderValue, HeaderValue)>) -> Self {
        Self {
            kind: Kind::Calling { future, headers },
        }
    }

    pub(crate) fn checking(
        check: CheckFuture,
        buckets: Arc<SharedBuckets>,
        name: String,
        limit: HeaderValue,
        service: S,
        request: R,
    ) -> Self {
        Self {
            kind: Kind::Checking {
                check,
                buckets,
                name,
                limit,
                pending: Some((service, request)),
            },
        }
    }

    pub(crate) fn rejected(rejection: Rejection) -> Self {
        Self {
            kind: Kind::Rejected {
                rejection: Some(rejection),
            },
        }
    }
}

impl<S: Service<R>, R> std::fmt::Debug for ResponseFuture<S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Checking { .. } => "checking",
            Kind::Calling { .. } => "calling",
            Kind::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}

impl<S, R, B> Future for ResponseFuture<S, R>
where
    S: Service<R, Response = Response<B>>,
{
    type Output = Result<Response<ResponseBody<B>>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut kind = self.as_mut().project().kind;
            match kind.as_mut().project() {
                KindProj::Checking {
                    check,
                    buckets,
                    name,
                    limit,
                    pending,
                } => {
                    let headers = match ready!(check.as_mut().poll(cx)) {
                        Ok(Verdict::Allowed { remaining }) => {
                            Some((limit.clone(), HeaderValue::from(remaining)))
                        }
                        Ok(Verdict::Limited { retry_after }) => {
                            tracing::debug!(key = %name, ?retry_after, "rate limited (shared)");
                            let name = std::mem::take(name);
                            buckets
                                .over_limit
                                .remember(name, Instant::now() + retry_after);
                            let limit = limit.clone();
                            kind.set(Kind::Rejected {
                                rejection: Some(Rejection::Limited { retry_after, limit }),
                            });
                            continue;
                        }
                        Err(error) => {
                            buckets.store_failed();
                            if buckets.fail == FailMode::Closed {
                                tracing::warn!(%error, "rate limit store failed; refusing the request");
                                kind.set(Kind::Rejected {
                                    rejection: Some(Rejection::Unavailable),
                                });
                                continue;
                            }
                            tracing::warn!(%error, "rate limit store failed; letting the request through");
                            None
                        }
                    };
                    let (mut service, request) = pending
                        .take()
                        .expect("ResponseFuture polled after completion");
                    let future = service.call(request);
                    kind.set(Kind::Calling { future, headers });
                }
                KindProj::Calling { future, headers } => {
                    let mut response = ready!(future.poll(cx))?;
                    if let Some((limit, remaining)) = headers.take() {
                        // A service that reports a limit of its own keeps its pair of headers.
                        let map = response.headers_mut();
                        if !map.contains_key(RATELIMIT_LIMIT) {
                            map.insert(RATELIMIT_LIMIT, limit);
                            map.insert(RATELIMIT_REMAINING, remaining);
                        }
                    }
                    return Poll::Ready(Ok(response.map(ResponseBody::inner)));
                }
                KindProj::Rejected { rejection } => {
                    let rejection = rejection
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(match rejection {
                        Rejection::Limited { retry_after, limit } => {
                            too_many_requests(retry_after, limit)
                        }
                        Rejection::Unavailable => unavailable(),
                    }));
                }
            }
        }
    }
}

/// Whole seconds, rounded up, at least 1: a client retrying after `Retry-After` succeeds.
fn whole_seconds(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// The layer's `429`.
fn too_many_requests<B>(retry_after: Duration, limit: HeaderValue) -> Response<ResponseBody<B>> {
    static LIMITED: LazyLock<Bytes> =
        LazyLock::new(|| error_body::json("rate_limited", "too many requests, retry later"));
    let json = LIMITED.clone();
    let status = StatusCode::TOO_MANY_REQUESTS;
    let mut response = error_body::response(status, json, ResponseBody::error);
    let seconds = HeaderValue::from(whole_seconds(retry_after));
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, seconds.clone());
    headers.insert(RATELIMIT_LIMIT, limit);
    headers.insert(RATELIMIT_REMAINING, HeaderValue::from_static("0"));
    headers.insert(RATELIMIT_RESET, seconds);
    response
        .extensions_mut()
        .insert(RateLimited { retry_after });
    response
}

/// The fail-closed `503`; no [`RateLimited`] extension: nothing was over a limit.
fn unavailable<B>() -> Response<ResponseBody<B>> {
    static UNAVAILABLE: LazyLock<Bytes> = LazyLock::new(|| {
        let message = "the rate limit store is unavailable, retry later";
        error_body::json("rate_limit_unavailable", message)
    });
    let status = StatusCode::SERVICE_UNAVAILABLE;
    let mut response = error_body::response(status, UNAVAILABLE.clone(), ResponseBody::error);
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}
