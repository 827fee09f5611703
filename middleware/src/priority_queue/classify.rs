//! [`Classify`] implementations: [`PolicyPriority`] (what a policy describes), and the
//! building blocks [`HeaderPriority`], [`Fixed`], [`AcceptEventStream`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use http::header::{self, HeaderName};
use http::{HeaderMap, Method, Request};

use super::Classify;
use crate::client::{ClientIdentity, PeerAddr};
use crate::policy::{PriorityQueuePolicy, StreamRule};

pub use crate::policy::MAX_PRIORITY;

/// Every request gets the same priority; never a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fixed(pub u8);

impl<B> Classify<B> for Fixed {
    fn classify(&self, _req: &Request<B>) -> u8 {
        self.0
    }
}

/// A header's decimal value, if it is one (surrounding whitespace ignored).
fn header_number(headers: &HeaderMap, name: &HeaderName) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The priority is a header's decimal value (`x-priority: 0..=9`, say); requests without
/// it, or with a value that is not a `u8`, get `default`.
///
/// Pitfall: the client chooses. Behind a public edge use [`PolicyPriority`], which believes
/// the header only from trusted proxies and removes it otherwise; or overwrite the header in
/// a trusted layer, or everyone will send `x-priority: 255`.
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
        header_number(req.headers(), &self.header)
            .and_then(|value| u8::try_from(value).ok())
            .unwrap_or(self.default)
    }
}

/// Wraps a classifier and marks streams: requests accepting `text/event-stream` or whose
/// path ends in `/stream`. The priority is the wrapped classifier's.
///
/// Pitfall: the client chooses its `Accept`, so any request can move itself into the stream
/// budget. [`PolicyPriority`] decides by path (or route) unless told otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptEventStream<C>(pub C);

impl<B, C: Classify<B>> Classify<B> for AcceptEventStream<C> {
    fn classify(&self, req: &Request<B>) -> u8 {
        self.0.classify(req)
    }

    fn is_stream(&self, req: &Request<B>) -> bool {
        accepts_event_stream(req) || req.uri().path().ends_with("/stream")
    }

    fn strip(&self, req: &mut Request<B>) {
        self.0.strip(req);
    }
}

fn accepts_event_stream<B>(req: &Request<B>) -> bool {
    req.headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("text/event-stream"))
}

/// The classifier a [`PriorityQueuePolicy`] describes. A request's priority, first that
/// applies:
///
/// 1. the `x-priority` header, if the connection's peer ([`PeerAddr`]) is one of the
///    policy's `trusted_proxies`, clamped to [`MAX_PRIORITY`];
/// 2. the priority the policy's `api_key_priorities` gives the request's
///    [`ClientIdentity`] (inserted by an authenticating layer);
/// 3. `default_priority`.
///
/// From a peer that is not trusted (or without [`PeerAddr`]), `x-priority` is ignored and
/// removed from the request ([`Classify::strip`]) so nothing behind the queue acts on it.
/// Streams are the requests the policy's [`StreamRule`] names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyPriority {
    header: HeaderName,
    trusted_proxies: Arc<[IpAddr]>,
    clients: Arc<HashMap<ClientIdentity, u8>>,
    default: u8,
    streams: StreamRule,
}

impl PolicyPriority {
    /// The classifier `policy` describes (priorities as given: validate the policy first).
    pub fn from_policy(policy: &PriorityQueuePolicy) -> Self {
        Self {
            header: HeaderName::from_static("x-priority"),
            trusted_proxies: policy.trusted_proxies.iter().copied().collect(),
            clients: Arc::new(
                policy
                    .api_key_priorities
                    .iter()
                    .map(|(client, priority)| (ClientIdentity::new(client.as_str()), *priority))
                    .collect(),
            ),
            default: policy.default_priority,
            streams: policy.streams.unwrap_or_default(),
        }
    }

    /// Whether the request's peer may set its own priority.
    fn trusts<B>(&self, req: &Request<B>) -> bool {
        req.extensions()
            .get::<PeerAddr>()
            .is_some_and(|peer| self.trusted_proxies.contains(&peer.0.ip()))
    }
}

impl<B> Classify<B> for PolicyPriority {
    fn classify(&self, req: &Request<B>) -> u8 {
        if self.trusts(req)
            && let Some(priority) = header_number(req.headers(), &self.header)
        {
            // Clamped: a trusted "255" (or "100000") is the highest priority, not more.
            return u8::try_from(priority.min(u64::from(MAX_PRIORITY))).unwrap_or(MAX_PRIORITY);
        }
        req.extensions()
            .get::<ClientIdentity>()
            .and_then(|client| self.clients.get(client))
            .copied()
            .unwrap_or(self.default)
    }

    fn is_stream(&self, req: &Request<B>) -> bool {
        match self.streams {
            StreamRule::Path => {
                req.method() == Method::GET && req.uri().path().ends_with("/stream")
            }
            StreamRule::All => true,
            StreamRule::None => false,
            StreamRule::Accept => {
                accepts_event_stream(req) || req.uri().path().ends_with("/stream")
            }
        }
    }

    fn strip(&self, req: &mut Request<B>) {
        if !self.trusts(req) {
            req.headers_mut().remove(&self.header);
        }
    }
}
