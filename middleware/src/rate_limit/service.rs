//! [`RateLimitService`]: takes a cell from the key's bucket, then calls the inner service
//! or answers `429`.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use governor::clock::{Clock, DefaultClock};
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use tower_service::Service;

use super::KeyExtractor;
use super::error::RateLimited;
use super::future::ResponseFuture;
use super::layer::Shared;
use crate::json_error::ResponseBody;

/// `RateLimit-Limit`: the bucket size (burst) of the key's quota.
pub(crate) const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
/// `RateLimit-Remaining`: requests the key may still make at once.
pub(crate) const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
/// `RateLimit-Reset`: seconds until the key may make one more request.
pub(crate) const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// The body of every `429`.
const LIMITED_JSON: &str =
    r#"{"error":{"code":"rate_limited","message":"too many requests, retry later"}}"#;

/// The service made by [`RateLimitLayer`](super::RateLimitLayer).
pub struct RateLimitService<S, E: KeyExtractor, C: Clock = DefaultClock> {
    inner: S,
    extractor: E,
    shared: Arc<Shared<E::Key, C>>,
}

impl<S: Clone, E: KeyExtractor, C: Clock> Clone for RateLimitService<S, E, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            extractor: self.extractor.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: std::fmt::Debug, E: KeyExtractor + std::fmt::Debug, C: Clock> std::fmt::Debug
    for RateLimitService<S, E, C>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitService")
            .field("inner", &self.inner)
            .field("extractor", &self.extractor)
            .field("quota", &self.shared.quota)
            .finish()
    }
}

impl<S, E: KeyExtractor, C: Clock> RateLimitService<S, E, C> {
    pub(crate) fn new(inner: S, extractor: E, shared: Arc<Shared<E::Key, C>>) -> Self {
        Self {
            inner,
            extractor,
            shared,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, E, C, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimitService<S, E, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    E: KeyExtractor,
    C: Clock,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        // The limit depends on the request's key, so it is decided in `call`.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let Some(key) = self.extractor.extract(&req) else {
            return ResponseFuture::inner(self.inner.call(req), None);
        };
        let limiter = &self.shared.limiter;
        match limiter.check_key(&key) {
            Ok(state) => {
                let remaining = HeaderValue::from(state.remaining_burst_capacity());
                let headers = (self.shared.limit.clone(), remaining);
                ResponseFuture::inner(self.inner.call(req), Some(headers))
            }
            Err(not_until) => {
                let retry_after = not_until.wait_time_from(limiter.clock().now());
                tracing::debug!(?retry_after, "rate limited");
                ResponseFuture::limited(too_many_requests(retry_after, self.shared.limit.clone()))
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
pub(crate) fn too_many_requests<B>(
    retry_after: Duration,
    limit: HeaderValue,
) -> Response<ResponseBody<B>> {
    let mut response = Response::new(ResponseBody::error(Bytes::from_static(
        LIMITED_JSON.as_bytes(),
    )));
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let seconds = HeaderValue::from(whole_seconds(retry_after));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::RETRY_AFTER, seconds.clone());
    headers.insert(RATELIMIT_LIMIT, limit);
    headers.insert(RATELIMIT_REMAINING, HeaderValue::from_static("0"));
    headers.insert(RATELIMIT_RESET, seconds);
    response
        .extensions_mut()
        .insert(RateLimited { retry_after });
    response
}
