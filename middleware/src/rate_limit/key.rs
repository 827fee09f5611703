//! Built-in [`KeyExtractor`]s of the rate limiter: global, header, peer IP, session id, authenticated client,
//! and [`PolicyKey`] choosing one of them from a [`RateLimitPolicy`].
//!
//! Every value the client chooses (a header, a session id) becomes a [`KeyDigest`]: 16
//! bytes of SHA-256, so a bucket costs the same whatever the client sent, no bucket keeps
//! the request's header buffer alive, and a key's name (in Redis, in a log line) never
//! holds a credential.

use std::net::IpAddr;

use http::Request;
use http::header::{self, HeaderName};
use sha2::{Digest, Sha256};

use crate::KeyExtractor;
use crate::client::{ClientIdentity, PeerAddr, SessionKey, forwarded_client};
use crate::policy::{KeyKind, PolicyError, Problem, RateLimitPolicy};

/// Every request shares one bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GlobalKey;

impl KeyExtractor for GlobalKey {
    type Key = ();

    fn extract<B>(&self, _req: &Request<B>) -> Option<()> {
        Some(())
    }
}

/// A client-chosen key value as 16 bytes of its SHA-256: fixed size, and no credential in
/// it. Shown (in [`Debug`](std::fmt::Debug) and key names) as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest([u8; 16]);

impl KeyDigest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self::finish(Sha256::new_with_prefix(bytes))
    }

    /// The digest of a header value, normalised so that spellings that mean the same
    /// credential share a bucket: surrounding whitespace is ignored, and for `Authorization`
    /// and `Proxy-Authorization` the scheme is case-insensitive and any run of spaces after
    /// it counts as one (`Bearer <k>`, `bearer  <k>`, `BEARER <k> ` are one key). `None` if the
    /// value is empty.
    pub fn of_header(name: &HeaderName, value: &[u8]) -> Option<Self> {
        let value = value.trim_ascii();
        if value.is_empty() {
            return None;
        }
        let credentials = name == header::AUTHORIZATION || name == header::PROXY_AUTHORIZATION;
        let split = value.iter().position(|b| *b == b' ' || *b == b'\t');
        let (Some(at), true) = (split, credentials) else {
            return Some(Self::of(value));
        };
        let (scheme, rest) = value.split_at(at);
        let mut hasher = Sha256::new();
        for byte in scheme {
            hasher.update([byte.to_ascii_lowercase()]);
        }
        hasher.update(b" ");
        hasher.update(rest.trim_ascii());
        Some(Self::finish(hasher))
    }

    fn finish(hasher: Sha256) -> Self {
        let digest = hasher.finalize();
        let mut bytes = [0; 16];
        bytes.copy_from_slice(&digest[..16]);
        Self(bytes)
    }
}

impl std::fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut hex = String::with_capacity(32);
        self.write_name(&mut hex);
        write!(f, "KeyDigest({hex})")
    }
}

/// One bucket per value of a header (an API key, a tenant id), normalised and hashed
/// ([`KeyDigest::of_header`]); requests without the header (or with an empty one) are not
/// limited.
///
/// Pitfall: the client chooses the value, so a client can spread itself over many buckets
/// (each new value a fresh one). For API keys prefer [`ClientKey`], which counts only keys
/// an earlier layer verified. Every distinct value holds a bucket until pruned or evicted
/// (the layer's `max_keys`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderKey(pub HeaderName);

impl KeyExtractor for HeaderKey {
    type Key = KeyDigest;

    fn extract<B>(&self, req: &Request<B>) -> Option<KeyDigest> {
        let value = req.headers().get(&self.0)?;
        KeyDigest::of_header(&self.0, value.as_bytes())
    }
}

/// One bucket per client IP address.
///
/// The client is the [`PeerAddr`] unless the peer is one of `trusted_proxies`: then it is
/// the right-most `X-Forwarded-For` entry that is not itself a trusted proxy
/// ([`forwarded_client`]).
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

impl KeyExtractor for PeerIpKey {
    type Key = IpAddr;

    fn extract<B>(&self, req: &Request<B>) -> Option<IpAddr> {
        let peer = req.extensions().get::<PeerAddr>()?.0.ip();
        Some(forwarded_client(peer, req.headers(), &self.trusted_proxies))
    }
}

/// One bucket per session: the [`SessionKey`] an earlier layer put in the request's
/// extensions, hashed ([`KeyDigest`]: a long id costs no more than a short one). Requests
/// without one are not limited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionIdKey;

impl KeyExtractor for SessionIdKey {
    type Key = KeyDigest;

    fn extract<B>(&self, req: &Request<B>) -> Option<KeyDigest> {
        let SessionKey(id) = req.extensions().get::<SessionKey>()?;
        Some(KeyDigest::of(id))
    }
}

/// One bucket per authenticated client: the [`ClientIdentity`] an earlier layer verified
/// and inserted (a fingerprint of the client's API key, say). Requests without one — no key, or
/// a key that did not verify — are counted per client IP ([`PeerIpKey`]) instead, so
/// made-up keys never get buckets of their own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientKey {
    /// The key of unauthenticated requests.
    pub unauthenticated: PeerIpKey,
}

impl KeyExtractor for ClientKey {
    type Key = LimitKey;

    fn extract<B>(&self, req: &Request<B>) -> Option<LimitKey> {
        match req.extensions().get::<ClientIdentity>() {
            Some(client) => Some(LimitKey::Client(client.clone())),
            None => self.unauthenticated.extract(req).map(LimitKey::PeerIp),
        }
    }
}

/// The key a [`PolicyKey`] extracted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// [`GlobalKey`].
    Global,
    /// [`PeerIpKey`], and [`ClientKey`] for unauthenticated requests.
    PeerIp(IpAddr),
    /// [`HeaderKey`].
    Header(KeyDigest),
    /// [`SessionIdKey`].
    SessionId(KeyDigest),
    /// [`ClientKey`] for authenticated requests.
    Client(ClientIdentity),
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
    /// `key = "api_key"`.
    Client(ClientKey),
}

impl PolicyKey {
    /// The extractor for `policy.key`; fails if the policy does not
    /// [validate](RateLimitPolicy::validate).
    pub fn from_policy(policy: &RateLimitPolicy) -> Result<Self, PolicyError> {
        policy.validate()?;
        let peer_ip = || PeerIpKey {
            trusted_proxies: policy.trusted_proxies.clone(),
        };
        Ok(match policy.key {
            KeyKind::Global => Self::Global(GlobalKey),
            KeyKind::PeerIp => Self::PeerIp(peer_ip()),
            KeyKind::Header => {
                // `validate` made sure there is one, and that it is a header name.
                let name = policy.key_header.as_deref().unwrap_or_default();
                let name = HeaderName::try_from(name).map_err(|_| {
                    let (value, expected) = (name.to_owned(), "a valid header name");
                    PolicyError::new("key_header", Problem::Invalid { value, expected })
                })?;
                Self::Header(HeaderKey(name))
            }
            KeyKind::SessionId => Self::SessionId(SessionIdKey),
            KeyKind::ApiKey => Self::Client(ClientKey {
                unauthenticated: peer_ip(),
            }),
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
            Self::Client(key) => key.extract(req),
        }
    }
}

/// A key as text, for limiters whose buckets live outside the process
/// ([`RateLimitLayer::shared`](super::RateLimitLayer::shared)): distinct keys must give
/// distinct names, and a name must never hold a credential (it becomes a Redis key name
/// and may be logged).
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

impl KeyName for KeyDigest {
    /// 32 lower-case hex digits.
    fn write_name(&self, out: &mut String) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for byte in self.0 {
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
    }
}

impl KeyName for ClientIdentity {
    fn write_name(&self, out: &mut String) {
        out.push_str(self.as_str());
    }
}

impl KeyName for LimitKey {
    /// `global`, `ip:<addr>`, `h:<digest>`, `s:<digest>` or `k:<client identity>`.
    fn write_name(&self, out: &mut String) {
        let (tag, key): (&str, &dyn KeyName) = match self {
            Self::Global => return ().write_name(out),
            Self::PeerIp(ip) => ("ip:", ip),
            Self::Header(digest) => ("h:", digest),
            Self::SessionId(digest) => ("s:", digest),
            Self::Client(client) => ("k:", client),
        };
        out.push_str(tag);
        key.write_name(out);
    }
}
