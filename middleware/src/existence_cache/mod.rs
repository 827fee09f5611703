//! Existence cache: answer "does this key exist?" before a request reaches the service.
//!
//! A [`KeyExtractor`](crate::KeyExtractor) picks the key out of the request (a session id
//! in the path, say); an [`ExistenceCheck`] asks the backend. Answers are cached — positive ones for
//! [`ExistenceCachePolicy::positive_ttl`] (default 5 s), negative ones for
//! [`ExistenceCachePolicy::negative_ttl`] (default 1 s; zero never caches a miss) — in a
//! bounded map that evicts its oldest entries when full, and [`Cache::invalidate`]
//! drops a key the application knows has gone.
//!
//! **Single-flight:** N concurrent requests for an uncached key cause one check; the others
//! wait for its answer. **Missing** keys get `404` with a JSON body and the inner service is
//! not called. **Check errors** pass the request through (the service decides) or answer
//! `503` with `Retry-After`, per [`OnError`].
//!
//! Readiness: the layer adds no capacity limit; `poll_ready` is the inner service's. A
//! request that passes carries [`Exists`] in its extensions, so the service can skip its
//! own lookup.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use agentgate_middleware::KeyExtractor;
//! use agentgate_middleware::existence_cache::{ExistenceCache, ExistenceCachePolicy, ExistenceCheck};
//! use http::{Request, Response, StatusCode};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! /// The first path segment is the key.
//! #[derive(Clone)]
//! struct FirstSegment;
//! impl KeyExtractor for FirstSegment {
//!     type Key = String;
//!     fn extract<B>(&self, req: &Request<B>) -> Option<String> {
//!         req.uri().path().split('/').nth(1).map(str::to_owned)
//!     }
//! }
//!
//! /// Only "alice" exists.
//! struct Users;
//! impl ExistenceCheck<String> for Users {
//!     type Error = Infallible;
//!     async fn exists(&self, key: &String) -> Result<bool, Infallible> {
//!         Ok(key == "alice")
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let layer = ExistenceCache::layer(FirstSegment, Users, ExistenceCachePolicy::default());
//! let mut svc = ServiceBuilder::new().layer(layer).service_fn(|_req: Request<()>| async {
//!     Ok::<_, Infallible>(Response::new(String::from("hello")))
//! });
//! let ok = svc.ready().await.unwrap().call(Request::get("/alice").body(()).unwrap()).await.unwrap();
//! assert_eq!(ok.status(), StatusCode::OK);
//! let missing = svc.ready().await.unwrap().call(Request::get("/bob").body(()).unwrap()).await.unwrap();
//! assert_eq!(missing.status(), StatusCode::NOT_FOUND);
//! # }
//! ```

mod cache;
mod layer;
mod service;

pub use crate::boxed_future::ResponseFuture;
pub use crate::error_body::ResponseBody;
pub use crate::policy::{ExistenceCachePolicy, OnError};
pub use cache::Cache;
pub use layer::{ExistenceCacheLayer, NotFound};
pub use service::ExistenceCache;

use std::future::Future;

/// Asks the backend whether a key exists.
pub trait ExistenceCheck<K>: Send + Sync + 'static {
    /// Why a check failed.
    type Error: std::fmt::Display + Send;

    /// Whether `key` exists now.
    fn exists(&self, key: &K) -> impl Future<Output = Result<bool, Self::Error>> + Send;
}

/// Marks a request whose key the cache vouched for (in the request extensions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exists;

#[cfg(test)]
mod tests;
