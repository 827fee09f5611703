//! [`ServiceBuilderExt`]: the layers of this crate as `ServiceBuilder` methods.
//!
//! ```
//! use std::convert::Infallible;
//! use agentgate_middleware::ServiceBuilderExt;
//! use agentgate_middleware::priority_queue::{PriorityQueueLayer, PriorityQueuePolicy};
//! use agentgate_middleware::rate_limit::{RateLimitLayer, RateLimitPolicy};
//! use http::{Request, Response};
//! use tower::ServiceBuilder;
//!
//! let service = ServiceBuilder::new()
//!     .rate_limit(RateLimitLayer::from_policy(&RateLimitPolicy::default()).unwrap())
//!     .priority_queue(PriorityQueueLayer::from_policy(&PriorityQueuePolicy::default()).unwrap())
//!     .service_fn(|_req: Request<()>| async { Ok::<_, Infallible>(Response::new(String::new())) });
//! # drop(service);
//! ```

use tower::ServiceBuilder;
use tower::layer::util::Stack;

/// Adds this crate's layers to a [`ServiceBuilder`], outermost first like `.layer(..)`.
pub trait ServiceBuilderExt<L> {
    /// Adds an [`ExistenceCacheLayer`](crate::existence_cache::ExistenceCacheLayer).
    #[cfg(feature = "existence-cache")]
    fn existence_cache<E, K, C>(
        self,
        layer: crate::existence_cache::ExistenceCacheLayer<E, K, C>,
    ) -> ServiceBuilder<Stack<crate::existence_cache::ExistenceCacheLayer<E, K, C>, L>>;

    /// Adds a [`RateLimitLayer`](crate::rate_limit::RateLimitLayer) (local or shared
    /// buckets).
    #[cfg(feature = "rate-limit")]
    fn rate_limit<E, C>(
        self,
        layer: crate::rate_limit::RateLimitLayer<E, C>,
    ) -> ServiceBuilder<Stack<crate::rate_limit::RateLimitLayer<E, C>, L>>
    where
        E: crate::KeyExtractor,
        C: governor::clock::Clock;

    /// Adds a [`PriorityQueueLayer`](crate::priority_queue::PriorityQueueLayer).
    #[cfg(feature = "priority-queue")]
    fn priority_queue<C>(
        self,
        layer: crate::priority_queue::PriorityQueueLayer<C>,
    ) -> ServiceBuilder<Stack<crate::priority_queue::PriorityQueueLayer<C>, L>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    #[cfg(feature = "existence-cache")]
    fn existence_cache<E, K, C>(
        self,
        layer: crate::existence_cache::ExistenceCacheLayer<E, K, C>,
    ) -> ServiceBuilder<Stack<crate::existence_cache::ExistenceCacheLayer<E, K, C>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "rate-limit")]
    fn rate_limit<E, C>(
        self,
        layer: crate::rate_limit::RateLimitLayer<E, C>,
    ) -> ServiceBuilder<Stack<crate::rate_limit::RateLimitLayer<E, C>, L>>
    where
        E: crate::KeyExtractor,
        C: governor::clock::Clock,
    {
        self.layer(layer)
    }

    #[cfg(feature = "priority-queue")]
    fn priority_queue<C>(
        self,
        layer: crate::priority_queue::PriorityQueueLayer<C>,
    ) -> ServiceBuilder<Stack<crate::priority_queue::PriorityQueueLayer<C>, L>> {
        self.layer(layer)
    }
}
