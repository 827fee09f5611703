//! [`KeyExtractor`]: what a keyed layer reads from a request. One trait for every layer
//! that keys its state by request: the rate limiter (one bucket per key), the existence
//! cache (one lookup per key) and the SSE fan-out (one shared stream per key).
//!
//! The shape is tower_governor's (`type Key`, `extract(&self, &Request<B>)`), except that
//! a request without a key is not an error: `None` means the layer leaves the request
//! alone (not limited, not checked, not shared). With the `tower-governor` feature,
//! `rate_limit::governor` adapts extractors both ways.
//!
//! ```
//! use agentgate_middleware::KeyExtractor;
//! use http::Request;
//!
//! /// The first path segment.
//! #[derive(Clone)]
//! struct FirstSegment;
//!
//! impl KeyExtractor for FirstSegment {
//!     type Key = String;
//!     fn extract<B>(&self, req: &Request<B>) -> Option<String> {
//!         let segment = req.uri().path().split('/').nth(1)?;
//!         (!segment.is_empty()).then(|| segment.to_owned())
//!     }
//! }
//!
//! let req = Request::get("/alice/stream").body(()).unwrap();
//! assert_eq!(FirstSegment.extract(&req).as_deref(), Some("alice"));
//! assert_eq!(FirstSegment.extract(&Request::get("/").body(()).unwrap()), None);
//! ```

use std::hash::Hash;

use http::Request;

/// Picks the key a keyed layer files a request under. `None`: the request has no key and
/// the layer passes it through untouched.
///
/// Implementations document what the key holds and its pitfalls: a value the client
/// chooses (a header) lets a client pick its own key; a key that shares state between
/// clients (the SSE fan-out's) must include whatever authorises the request.
pub trait KeyExtractor: Clone + Send + Sync + 'static {
    /// The key; requests with equal keys share the layer's state.
    type Key: Clone + Eq + Hash + Send + Sync + 'static;

    /// The request's key, if it has one.
    fn extract<B>(&self, req: &Request<B>) -> Option<Self::Key>;
}
