//! [`Classify`] implementations: [`HeaderPriority`], [`Fixed`], [`AcceptEventStream`].

use http::Request;
use http::header::{self, HeaderName};

use super::Classify;

/// Every request gets the same priority; never a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fixed(pub u8);

impl<B> Classify<B> for Fixed {
    fn classify(&self, _req: &Request<B>) -> u8 {
        self.0
    }
}

/// The priority is a header's decimal value (`x-priority: 0..=9`, say); requests without
/// it, or with a value that is not a `u8`, get `default`.
///
/// Pitfall: the client chooses. Behind a public edge, strip or overwrite the header in a
/// trusted layer (from the API key's plan, say) or everyone will send `x-priority: 255`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderPriority {
    /// The header holding the priority.
    pub header: HeaderName,
    /// The priority of requests without a valid header.
    pub default: u8,
}

impl HeaderPriority {
    /// The header `x-priority`, else `default`.
    pub fn x_priority(default: u8) -> Self {
        Self {
            header: HeaderName::from_static("x-priority"),
            default,
        }
    }
}

impl<B> Classify<B> for HeaderPriority {
    fn classify(&self, req: &Request<B>) -> u8 {
        req.headers()
            .get(&self.header)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(self.default)
    }
}

/// Wraps a classifier and marks streams: requests accepting `text/event-stream` or whose
/// path ends in `/stream`. The priority is the wrapped classifier's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptEventStream<C>(pub C);

impl<B, C: Classify<B>> Classify<B> for AcceptEventStream<C> {
    fn classify(&self, req: &Request<B>) -> u8 {
        self.0.classify(req)
    }

    fn is_stream(&self, req: &Request<B>) -> bool {
        let accepts_sse = req
            .headers()
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .any(|value| value.contains("text/event-stream"));
        accepts_sse || req.uri().path().ends_with("/stream")
    }
}
