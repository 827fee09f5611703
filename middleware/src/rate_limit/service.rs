//! [`RateLimit`]: finds the request's key, asks the backend, then calls the inner service
//! or answers `429`.

use std::sync::Arc;
use std::task::{Context, Poll};

use governor::clock::{Clock, DefaultClock};
use http::header::HeaderValue;
use http::{Request, Response};
use tokio::time::Instant;
use tower_service::Service;

use super::Quota;
use super::future::{Rejection, ResponseFuture};
use super::layer::{Backend, Limiter, RateLimitLayer};
use crate::KeyExtractor;
use crate::error_body::ResponseBody;

/// The service made by [`RateLimitLayer`].
pub struct RateLimit<S, E: KeyExtractor, C: Clock = DefaultClock> {
    inner: S,
    extractor: E,
    limiter: Arc<Limiter<E::Key, C>>,
}

impl<S: Clone, E: KeyExtractor, C: Clock> Clone for RateLimit<S, E, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            extractor: self.extractor.clone(),
            limiter: Arc::clone(&self.limiter),
        }
    }
}

impl<S: std::fmt::Debug, E: KeyExtractor + std::fmt::Debug, C: Clock> std::fmt::Debug
    for RateLimit<S, E, C>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("extractor", &self.extractor)
            .field("quota", &self.limiter.quota)
            .finish()
    }
}

impl<E: KeyExtractor> RateLimit<(), E> {
    /// A [`RateLimitLayer`] with local buckets: each key `extractor` finds gets `quota`
    /// (same as [`RateLimitLayer::new`]).
    pub fn layer(extractor: E, quota: impl Into<Quota>) -> RateLimitLayer<E> {
        RateLimitLayer::new(extractor, quota)
    }
}

impl<S, E: KeyExtractor, C: Clock> RateLimit<S, E, C> {
    pub(crate) fn new(inner: S, extractor: E, limiter: Arc<Limiter<E::Key, C>>) -> Self {
        Self {
            inner,
            extractor,
            limiter,
        }
    }

    crate::inner_service_accessors!();
}

impl<S, E, C, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S, E, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    E: KeyExtractor,
    C: Clock,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, Request<ReqBody>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        // The limit depends on the request's key, so it is decided in `call`.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let Some(key) = self.extractor.extract(&req) else {
            return ResponseFuture::calling(self.inner.call(req), None);
        };
        let limit = &self.limiter.limit;
        match &self.limiter.backend {
            Backend::Local { limiter, .. } => match limiter.check_key(&key) {
                Ok(state) => {
                    let remaining = HeaderValue::from(state.remaining_burst_capacity());
                    let headers = Some((limit.clone(), remaining));
                    ResponseFuture::calling(self.inner.call(req), headers)
                }
                Err(not_until) => {
                    let retry_after = not_until.wait_time_from(limiter.clock().now());
                    tracing::debug!(?retry_after, "rate limited");
                    ResponseFuture::rejected(Rejection::Limited {
                        retry_after,
                        limit: limit.clone(),
                    })
                }
            },
            Backend::Shared { buckets, name } => {
                let mut key_name = buckets.prefix.clone();
                name(&key, &mut key_name);
                if let Some(retry_after) = buckets.over_limit.refused_for(&key_name, Instant::now())
                {
                    return ResponseFuture::rejected(Rejection::Limited {
                        retry_after,
                        limit: limit.clone(),
                    });
                }
                let check = buckets.gcra.check(&key_name, self.limiter.quota);
                // The store answers later, so the future takes the service that was polled
                // ready and leaves a clone here (to be polled before the next call).
                let fresh = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, fresh);
                let buckets = Arc::clone(buckets);
                ResponseFuture::checking(check, buckets, key_name, limit.clone(), ready, req)
            }
        }
    }
}
