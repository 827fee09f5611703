//! [`ExistenceCacheService`]: checks the key, then calls the inner service or answers.

use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response, StatusCode, header};
use tower_service::Service;

use super::cache::ExistenceCache;
use super::layer::NotFound;
use super::policy::OnError;
use super::{ExistenceCheck, Exists, KeyExtractor};
use crate::json_error::ResponseBody;

/// The service made by [`ExistenceCacheLayer`](super::ExistenceCacheLayer).
pub struct ExistenceCacheService<S, E, K, C> {
    inner: S,
    extractor: E,
    cache: ExistenceCache<K, C>,
    not_found: NotFound,
}

impl<S: Clone, E: Clone, K, C> Clone for ExistenceCacheService<S, E, K, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            extractor: self.extractor.clone(),
            cache: self.cache.clone(),
            not_found: self.not_found,
        }
    }
}

impl<S: std::fmt::Debug, E, K, C> std::fmt::Debug for ExistenceCacheService<S, E, K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExistenceCacheService")
            .field("inner", &self.inner)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl<S, E, K, C> ExistenceCacheService<S, E, K, C> {
    pub(crate) fn new(
        inner: S,
        extractor: E,
        cache: ExistenceCache<K, C>,
        not_found: NotFound,
    ) -> Self {
        Self {
            inner,
            extractor,
            cache,
            not_found,
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

/// Future of an [`ExistenceCacheService`] call.
pub type ResponseFuture<T, Err> = Pin<Box<dyn Future<Output = Result<T, Err>> + Send>>;

impl<S, E, K, C, ReqBody, ResBody> Service<Request<ReqBody>> for ExistenceCacheService<S, E, K, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    E: KeyExtractor<ReqBody, Key = K>,
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
            return Box::pin(async move { Ok(inner.call(req).await?.map(ResponseBody::inner)) });
        };
        let cache = self.cache.clone();
        let not_found = self.not_found;
        Box::pin(async move {
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
    let mut response = Response::new(ResponseBody::error(crate::json_error::body(code, message)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}
