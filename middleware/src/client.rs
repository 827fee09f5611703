//! Who sent a request, as earlier layers established it: the connection's peer address
//! ([`PeerAddr`]), the authenticated client ([`ClientIdentity`]) and the session the request
//! is about ([`SessionKey`]).
//!
//! The server and the authenticating layer insert these into the request's extensions; the
//! rate limiter ([`KeyKind::PeerIp`](crate::rate_limit::KeyKind::PeerIp),
//! [`KeyKind::ApiKey`](crate::rate_limit::KeyKind::ApiKey)) and the priority queue (trusted
//! proxies, per-client priorities) read them. Neither is ever taken from a header the client
//! wrote.
//!
//! [`forwarded_client`] reads the client's address through trusted proxies'
//! `X-Forwarded-For`; the rate limiter's peer-IP key and agentgate's per-address connection
//! cap both use it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::HeaderMap;

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

/// The client's address for a request from `peer`: `peer` itself unless it is one of
/// `trusted` proxies; then the right-most `X-Forwarded-For` entry that is not itself a
/// trusted proxy (each proxy appends the address it saw, so entries left of that one were
/// written by the client and can be forged). If every entry is trusted, the left-most one
/// is the client; an entry that does not parse stops the walk, and the last trusted hop is
/// the answer.
///
/// Never trust the *left-most* entry, nor the header at all from a peer you do not trust:
/// clients would choose their own address.
pub fn forwarded_client(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    let mut hop = peer;
    if !trusted.contains(&hop) {
        return hop;
    }
    // Several header lines form one list, in order; read them right to left.
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(list) = value.to_str() else {
            return hop;
        };
        for entry in list.rsplit(',') {
            let Some(ip) = parse_forwarded(entry.trim()) else {
                return hop;
            };
            if !trusted.contains(&ip) {
                return ip;
            }
            hop = ip;
        }
    }
    hop
}

/// An `X-Forwarded-For` entry: an IP, optionally with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|addr| addr.ip()))
}
