//! Built-in [`KeyExtractor`]s: global, header, peer IP, session id, and [`PolicyKey`]
//! choosing one of them from a [`RateLimitPolicy`].

use std::net::{IpAddr, SocketAddr};

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Request};

use super::KeyExtractor;
use super::error::PolicyError;
use super::policy::{KeyKind, RateLimitPolicy};

/// Every request shares one bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GlobalKey;

impl KeyExtractor for GlobalKey {
    type Key = ();

    fn extract<B>(&self, _req: &Request<B>) -> Option<()> {
        Some(())
    }
}

/// One bucket per value of a header (an API key, a tenant id); requests without the header
/// are not limited.
///
/// Pitfall: the client chooses the value, so a client can spread itself over many buckets.
/// Use it only for a header an earlier layer has authenticated, and [`prune`] regularly,
/// since every distinct value holds state until pruned.
///
/// [`prune`]: super::RateLimitLayer::prune
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderKey(pub HeaderName);

impl KeyExtractor for HeaderKey {
    type Key = HeaderValue;

    fn extract<B>(&self, req: &Request<B>) -> Option<HeaderValue> {
        req.headers().get(&self.0).cloned()
    }
}

/// The address of the connection's peer. The server inserts it into each request's
/// extensions (hyper and pingora know it; the request does not); [`PeerIpKey`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerAddr(pub SocketAddr);

/// One bucket per client IP address.
///
/// The client is the [`PeerAddr`] unless the peer is one of `trusted_proxies`: then it is
/// the right-most `X-Forwarded-For` entry that is not itself a trusted proxy (each proxy
/// appends the address it saw, so entries left of that one were written by the client and
/// can be forged). If every entry is trusted, the left-most one is the client; an entry
/// that does not parse stops the walk, and the last trusted hop is the key.
///
/// Pitfalls:
/// - Without [`PeerAddr`] in the extensions the request is **not limited**: make sure the
///   server inserts it.
/// - Behind a load balancer that is not in `trusted_proxies`, every request has the
///   balancer's address and all clients share one bucket.
/// - Never trust the *left-most* `X-Forwarded-For` entry, nor the header at all from a peer
///   you do not trust: clients would pick their own key and evade the limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIpKey {
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
}

impl PeerIpKey {
    fn is_trusted(&self, ip: &IpAddr) -> bool {
        self.trusted_proxies.contains(ip)
    }

    /// Walks `X-Forwarded-For` from the right, starting at the trusted `peer`.
    fn client_behind(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut hop = peer;
        // Several header lines form one list, in order; read them right to left.
        for value in headers.get_all("x-forwarded-for").iter().rev() {
            let Ok(list) = value.to_str() else {
                return hop;
            };
            for entry in list.rsplit(',') {
                let Some(ip) = parse_forwarded(entry.trim()) else {
                    return hop;
                };
                if !self.is_trusted(&ip) {
                    return ip;
                }
                hop = ip;
            }
        }
        hop
    }
}

/// An `X-Forwarded-For` entry: an IP, optionally with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|addr| addr.ip()))
}

impl KeyExtractor for PeerIpKey {
    type Key = IpAddr;

    fn extract<B>(&self, req: &Request<B>) -> Option<IpAddr> {
        let peer = req.extensions().get::<PeerAddr>()?.0.ip();
        if self.is_trusted(&peer) {
            Some(self.client_behind(peer, req.headers()))
        } else {
            Some(peer)
        }
    }
}

/// One bucket per session: the `{id}` of `/v2/sessions/{id}` and `/v2/sessions/{id}/...`.
/// Other paths are not limited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionIdKey;

impl KeyExtractor for SessionIdKey {
    type Key = String;

    fn extract<B>(&self, req: &Request<B>) -> Option<String> {
        let rest = req.uri().path().strip_prefix("/v2/sessions/")?;
        let id = rest.split('/').next().filter(|id| !id.is_empty())?;
        Some(id.to_owned())
    }
}

/// The key a [`PolicyKey`] extracted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// [`GlobalKey`].
    Global,
    /// [`PeerIpKey`].
    PeerIp(IpAddr),
    /// [`HeaderKey`].
    Header(HeaderValue),
    /// [`SessionIdKey`].
    SessionId(String),
}

/// The built-in extractor a [`RateLimitPolicy`] asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyKey {
    /// `key = "global"`.
    Global(GlobalKey),
    /// `key = "peer_ip"`.
    PeerIp(PeerIpKey),
    /// `key = "header"`.
    Header(HeaderKey),
    /// `key = "session_id"`.
    SessionId(SessionIdKey),
}

impl PolicyKey {
    /// The extractor for `policy.key`; fails if `key = "header"` lacks a valid
    /// `key_header`.
    pub fn from_policy(policy: &RateLimitPolicy) -> Result<Self, PolicyError> {
        Ok(match policy.key {
            KeyKind::Global => Self::Global(GlobalKey),
            KeyKind::PeerIp => Self::PeerIp(PeerIpKey {
                trusted_proxies: policy.trusted_proxies.clone(),
            }),
            KeyKind::Header => {
                let name = policy
                    .key_header
                    .as_deref()
                    .ok_or(PolicyError::MissingKeyHeader)?;
                let name = HeaderName::try_from(name)
                    .map_err(|_| PolicyError::InvalidKeyHeader(name.to_owned()))?;
                Self::Header(HeaderKey(name))
            }
            KeyKind::SessionId => Self::SessionId(SessionIdKey),
        })
    }
}

impl KeyExtractor for PolicyKey {
    type Key = LimitKey;

    fn extract<B>(&self, req: &Request<B>) -> Option<LimitKey> {
        match self {
            Self::Global(_) => Some(LimitKey::Global),
            Self::PeerIp(key) => key.extract(req).map(LimitKey::PeerIp),
            Self::Header(key) => key.extract(req).map(LimitKey::Header),
            Self::SessionId(key) => key.extract(req).map(LimitKey::SessionId),
        }
    }
}

/// A key as text, for limiters whose buckets live outside the process
/// ([`SharedRateLimitLayer`](super::SharedRateLimitLayer)): distinct keys must give
/// distinct names.
pub trait KeyName {
    /// Appends the key's name to `out`.
    fn write_name(&self, out: &mut String);
}

impl KeyName for () {
    fn write_name(&self, out: &mut String) {
        out.push_str("global");
    }
}

impl KeyName for IpAddr {
    fn write_name(&self, out: &mut String) {
        use std::fmt::Write;
        // Writing to a String cannot fail.
        let _ = write!(out, "{self}");
    }
}

impl KeyName for String {
    fn write_name(&self, out: &mut String) {
        out.push_str(self);
    }
}

impl KeyName for HeaderValue {
    /// Visible ASCII as is, every other byte (and `%`) as `%XX`: opaque header bytes
    /// still give distinct names.
    fn write_name(&self, out: &mut String) {
        use std::fmt::Write;
        for &byte in self.as_bytes() {
            if byte.is_ascii_graphic() && byte != b'%' {
                out.push(char::from(byte));
            } else {
                let _ = write!(out, "%{byte:02X}");
            }
        }
    }
}

impl KeyName for LimitKey {
    /// `global`, `ip:<addr>`, `h:<value>` or `s:<session id>`.
    fn write_name(&self, out: &mut String) {
        match self {
            Self::Global => ().write_name(out),
            Self::PeerIp(ip) => {
                out.push_str("ip:");
                ip.write_name(out);
            }
            Self::Header(value) => {
                out.push_str("h:");
                value.write_name(out);
            }
            Self::SessionId(id) => {
                out.push_str("s:");
                id.write_name(out);
            }
        }
    }
}
