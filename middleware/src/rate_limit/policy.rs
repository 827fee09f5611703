//! [`RateLimitPolicy`]: the layer's settings, as TOML-friendly data.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::Quota;
use serde::{Deserialize, Serialize};

/// What a request is counted against: one bucket per distinct key.
///
/// Written as a plain string in TOML: `key = "global"`, `"peer_ip"`, `"header"` (with
/// [`key_header`](RateLimitPolicy::key_header)) or `"session_id"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    /// One bucket for all requests.
    #[default]
    Global,
    /// One bucket per client IP: the peer address, or the right-most untrusted
    /// `X-Forwarded-For` entry when the peer is one of
    /// [`trusted_proxies`](RateLimitPolicy::trusted_proxies). See
    /// [`PeerIpKey`](super::PeerIpKey).
    PeerIp,
    /// One bucket per value of the header named by
    /// [`key_header`](RateLimitPolicy::key_header); requests without it are not limited.
    Header,
    /// One bucket per session: the `{id}` of `/v2/sessions/{id}/...`; other paths are not
    /// limited.
    SessionId,
}

/// Settings of a [`RateLimitLayer`](super::RateLimitLayer).
///
/// ```toml
/// per_second = 20       # sustained rate per key
/// burst = 40            # requests a fresh key may make at once (default: per_second)
/// key = "header"        # global | peer_ip | header | session_id
/// key_header = "x-api-key"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitPolicy {
    /// Sustained requests per second per key: one request's worth of capacity comes back
    /// every `1 / per_second` seconds. Default 100.
    pub per_second: u32,
    /// Most requests a key may make at once (the bucket size). Default: `per_second`.
    pub burst: Option<u32>,
    /// What requests are counted against. Default `global`.
    pub key: KeyKind,
    /// Header whose value is the key when `key = "header"` (e.g. `x-api-key`). Ignored
    /// otherwise. Default none.
    pub key_header: Option<String>,
    /// Peers whose `X-Forwarded-For` is believed when `key = "peer_ip"` (your load
    /// balancers). Ignored otherwise. Default none: the peer address is the key.
    pub trusted_proxies: Vec<IpAddr>,
}

impl Default for RateLimitPolicy {
    fn default() -> Self {
        Self {
            per_second: 100,
            burst: None,
            key: KeyKind::Global,
            key_header: None,
            trusted_proxies: Vec::new(),
        }
    }
}

impl RateLimitPolicy {
    /// The governor quota: `per_second` replenishment with a bucket of `burst`. `None` if
    /// `per_second` or `burst` is zero.
    pub fn quota(&self) -> Option<Quota> {
        let rate = NonZeroU32::new(self.per_second)?;
        let burst = NonZeroU32::new(self.burst.unwrap_or(self.per_second))?;
        Some(Quota::per_second(rate).allow_burst(burst))
    }
}
