//! Who sent a request, as earlier layers established it: the connection's peer address
//! ([`PeerAddr`]), the authenticated client ([`ClientIdentity`]) and the session the request
//! is about ([`SessionKey`]).
//!
//! The server and the authenticating layer insert these into the request's extensions; the
//! rate limiter ([`KeyKind::PeerIp`](crate::rate_limit::KeyKind::PeerIp),
//! [`KeyKind::ApiKey`](crate::rate_limit::KeyKind::ApiKey)) and the priority queue (trusted
//! proxies, per-client priorities) read them. Neither is ever taken from a header the client
//! wrote.

use std::net::SocketAddr;
use std::sync::Arc;

/// The address of the connection's peer. The server inserts it into each request's
/// extensions (hyper and pingora know it; the request does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerAddr(pub SocketAddr);

/// The client an earlier layer authenticated, by a stable identity that is **not a secret**
/// (a fingerprint of the verified API key, say, never the key). It ends up in Redis key
/// names and log lines, so never put a credential here.
///
/// Requests without it are unauthenticated: layers keyed by it fall back to something the
/// client cannot choose (the peer address), never to a key per presented credential.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientIdentity(Arc<str>);

impl ClientIdentity {
    /// The identity `id`.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self(id.into())
    }

    /// The identity as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The session a request is about, as an earlier layer read it from the request
/// (the id in the application's session paths, say). The rate limiter's
/// [`KeyKind::SessionId`](crate::rate_limit::KeyKind::SessionId) keys by it; this crate
/// never parses an application's URL layout itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey(pub bytes::Bytes);
