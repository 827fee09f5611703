//! [`ExistenceCache`]: checks the key, then calls the inner service or answers.

use std::hash::Hash;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response, StatusCode, header};
use tower_service::Service;

use super::cache::Cache;
use super::layer::ExistenceCacheLayer;
use super::layer::NotFound;
use super::{ExistenceCheck, Exists};
use crate::KeyExtractor;
use crate::boxed_future::ResponseFuture;
use crate::error_body::{self, ResponseBody};
use crate::policy::{ExistenceCachePolicy, OnError};

/// The service made by [`ExistenceCacheLayer`](super::ExistenceCacheLayer).
pub struct ExistenceCache<S, E, K, C> {
    inner: S,
    extractor: E,
    cache: Cache<K, C>,
    not_found: NotFound,
}

impl<S: Clone, E: Clone, K, C> Clone for ExistenceCache<S, E, K, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            extractor: self.extractor.clone(),
            cache: self.cache.clone(),
            not_found: self.not_found,
        }
    }
}

impl<S: std::fmt::Debug, E, K, C> std::fmt::Debug for ExistenceCache<S, E, K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExistenceCache")
            .field("inner", &self.inner)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl<E, K, C> ExistenceCache<(), E, K, C>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    C: ExistenceCheck<K>,
{
    /// An [`ExistenceCacheLayer`] extracting keys with `extractor` and checking them with
    /// `check` (same as [`ExistenceCacheLayer::new`]).
    pub fn layer(
        extractor: E,
        check: C,
        policy: ExistenceCachePolicy,
    ) -> ExistenceCacheLayer<E, K, C> {
        ExistenceCacheLayer::new(extractor, check, policy)
    }
}

impl<S, E, K, C> ExistenceCache<S, E, K, C> {
    pub(crate) fn new(inner: S, extractor: E, cache: Cache<K, C>, not_found: NotFound) -> Self {
        Self {
            inner,
            extractor,
            cache,
            not_found,
        }
    }

    crate::inner_service_accessors!();
}

impl<S, E, K, C, ReqBody, ResBody> Service<Request<ReqBody>> for ExistenceCache<S, E, K, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    E: KeyExtractor<Key = K>,
    K: Clone + Eq + Hash + Send + Sync + 'static,
    C: ExistenceCheck<K>,
    ReqBody: Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<Self::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // The readied service goes into the future; a fresh clone stays for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(key) = self.extractor.extract(&req) else {
            return ResponseFuture::new(async move {
                Ok(inner.call(req).await?.map(ResponseBody::inner))
            });
        };
        let cache = self.cache.clone();
        let not_found = self.not_found;
        ResponseFuture::new(async move {
            match cache.lookup(&key).await {
                Ok(true) => {
                    req.extensions_mut().insert(Exists);
                }
                Ok(false) => {
                    return Ok(error(
                        StatusCode::NOT_FOUND,
                        not_found.code,
                        not_found.message,
                    ));
                }
                Err(reason) => match cache.policy().on_error {
                    OnError::Pass => {}
                    OnError::Unavailable => {
                        tracing::warn!(%reason, "existence check failed");
                        return Ok(error(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "unavailable",
                            "existence check failed, retry later",
                        ));
                    }
                },
            }
            Ok(inner.call(req).await?.map(ResponseBody::inner))
        })
    }
}

/// The layer's own JSON error response.
fn error<B>(status: StatusCode, code: &str, message: &str) -> Response<ResponseBody<B>> {
    let json = error_body::json(code, message);
    let mut response = error_body::response(status, json, ResponseBody::error);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        let headers = response.headers_mut();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}
