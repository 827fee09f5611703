//! tower_governor interop (feature `tower-governor`): key extractors cross over both ways.
//!
//! - [`FromGovernor`] wraps a `tower_governor::key_extractor::KeyExtractor` so it keys a
//!   [`RateLimitLayer`](super::RateLimitLayer) (or any layer of this crate): users of
//!   tower_governor bring the extractor they already have. An extraction error means "no
//!   key": the request is not limited (tower_governor would answer it with an error).
//! - [`ForGovernor`] wraps one of this crate's extractors ([`PeerIpKey`](super::PeerIpKey)
//!   with trusted proxies, [`ClientKey`](super::ClientKey)...) so a tower_governor
//!   `GovernorLayer` can use it. A request without a key is
//!   `GovernorError::UnableToExtractKey` there.
//!
//! ```
//! use agentgate_middleware::rate_limit::compat::{ForGovernor, FromGovernor};
//! use agentgate_middleware::rate_limit::{PeerIpKey, RateLimitLayer, Quota};
//! use tower_governor::governor::GovernorConfigBuilder;
//! use tower_governor::key_extractor::GlobalKeyExtractor;
//!
//! // tower_governor's extractor in our layer.
//! let quota = Quota { interval: std::time::Duration::from_secs(1), burst: 5 };
//! let ours = RateLimitLayer::new(FromGovernor(GlobalKeyExtractor), quota);
//!
//! // Our extractor in tower_governor's layer.
//! let config = GovernorConfigBuilder::default()
//!     .key_extractor(ForGovernor(PeerIpKey::default()))
//!     .finish()
//!     .expect("non-zero quota");
//! # drop((ours, config));
//! ```

use std::fmt::Debug;

use http::Request;
use tower_governor::GovernorError;
use tower_governor::key_extractor::KeyExtractor as GovernorKeyExtractor;

use crate::KeyExtractor;

/// A tower_governor key extractor used as this crate's [`KeyExtractor`]; see the
/// [module docs](self).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FromGovernor<K>(pub K);

impl<K> KeyExtractor for FromGovernor<K>
where
    K: GovernorKeyExtractor + Send + Sync + 'static,
    K::Key: Send + Sync + 'static,
{
    type Key = K::Key;

    fn extract<B>(&self, req: &Request<B>) -> Option<K::Key> {
        self.0.extract(req).ok()
    }
}

/// One of this crate's [`KeyExtractor`]s used as tower_governor's; see the
/// [module docs](self).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForGovernor<E>(pub E);

impl<E> GovernorKeyExtractor for ForGovernor<E>
where
    E: KeyExtractor,
    E::Key: Debug,
{
    type Key = E::Key;

    fn extract<B>(&self, req: &Request<B>) -> Result<E::Key, GovernorError> {
        self.0.extract(req).ok_or(GovernorError::UnableToExtractKey)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::SocketAddr;

    use http::{Response, StatusCode};
    use tower::{Service, ServiceBuilder, ServiceExt};
    use tower_governor::GovernorLayer;
    use tower_governor::governor::GovernorConfigBuilder;
    use tower_governor::key_extractor::PeerIpKeyExtractor;

    use super::*;
    use crate::client::PeerAddr;
    use crate::rate_limit::{PeerIpKey, Quota, RateLimitLayer};

    async fn status<S, B>(svc: &mut S, req: Request<()>) -> StatusCode
    where
        S: Service<Request<()>, Response = Response<B>, Error = Infallible>,
    {
        svc.ready().await.unwrap().call(req).await.unwrap().status()
    }

    /// A peer's second request is refused; another peer has a bucket of its own.
    async fn one_bucket_per_peer<S, B>(svc: &mut S)
    where
        S: Service<Request<()>, Response = Response<B>, Error = Infallible>,
    {
        assert_eq!(status(svc, from("10.0.0.1:1")).await, StatusCode::OK);
        let second = status(svc, from("10.0.0.1:2")).await;
        assert_eq!(second, StatusCode::TOO_MANY_REQUESTS);
        let other = status(svc, from("10.0.0.2:1")).await;
        assert_eq!(other, StatusCode::OK, "own bucket");
    }

    fn from(peer: &str) -> Request<()> {
        let mut req = Request::get("/").body(()).unwrap();
        let addr: SocketAddr = peer.parse().unwrap();
        req.extensions_mut().insert(PeerAddr(addr));
        // tower_governor's own peer-IP extractor reads axum's connect info.
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(addr));
        req
    }

    #[tokio::test]
    async fn our_extractor_keys_tower_governors_layer() {
        let config = GovernorConfigBuilder::default()
            .per_second(60)
            .burst_size(1)
            .key_extractor(ForGovernor(PeerIpKey::default()))
            .finish()
            .unwrap();
        let mut svc = ServiceBuilder::new()
            .layer(GovernorLayer::new(config))
            .service_fn(|_req: Request<()>| async {
                Ok::<_, Infallible>(Response::new(axum::body::Body::empty()))
            });
        one_bucket_per_peer(&mut svc).await;
        // No peer address: no key, which tower_governor answers as an error.
        let anonymous = Request::get("/").body(()).unwrap();
        assert_eq!(
            status(&mut svc, anonymous).await,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[tokio::test]
    async fn tower_governors_extractor_keys_our_layer() {
        let quota = Quota {
            interval: std::time::Duration::from_secs(60),
            burst: 1,
        };
        let mut svc = ServiceBuilder::new()
            .layer(RateLimitLayer::new(FromGovernor(PeerIpKeyExtractor), quota))
            .service_fn(|_req: Request<()>| async {
                Ok::<_, Infallible>(Response::new(String::new()))
            });
        one_bucket_per_peer(&mut svc).await;
        // Its extraction error is "no key" here: not limited.
        for _ in 0..3 {
            let anonymous = Request::get("/").body(()).unwrap();
            assert_eq!(status(&mut svc, anonymous).await, StatusCode::OK);
        }
    }
}
