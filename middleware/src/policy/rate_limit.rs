//! [`RateLimitPolicy`]: the layer's settings, as TOML-friendly data.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{PolicyError, Problem, at_least_one};

/// Buckets a local limiter holds unless told otherwise ([`RateLimitPolicy::max_keys`]).
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// What a request is counted against: one bucket per distinct key.
///
/// Written as a plain string in TOML: `key = "global"`, `"peer_ip"`, `"header"` (with
/// [`key_header`](RateLimitPolicy::key_header)), `"session_id"` or `"api_key"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    /// One bucket for all requests.
    #[default]
    Global,
    /// One bucket per client IP: the peer address, or the right-most untrusted
    /// `X-Forwarded-For` entry when the peer is one of
    /// [`trusted_proxies`](RateLimitPolicy::trusted_proxies). See `rate_limit::PeerIpKey`.
    PeerIp,
    /// One bucket per value of the header named by
    /// [`key_header`](RateLimitPolicy::key_header), normalised and hashed (see
    /// `rate_limit::HeaderKey`); requests without it are not limited. The client
    /// picks the value: prefer `api_key` for API keys.
    Header,
    /// One bucket per session: the `client::SessionKey` an earlier layer put in the
    /// request (the application names its sessions; this crate never parses paths);
    /// requests without one are not limited.
    SessionId,
    /// One bucket per authenticated client: the `client::ClientIdentity` an earlier layer
    /// verified (a fingerprint of the client's API key, say). Requests without one are
    /// counted per client IP, as with `peer_ip` (same
    /// [`trusted_proxies`](RateLimitPolicy::trusted_proxies)), so made-up keys never get
    /// buckets of their own. See `rate_limit::ClientKey`.
    ApiKey,
}

/// Where the buckets live.
///
/// Written as a plain string in TOML: `store = "local"` or `"redis"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitStore {
    /// In this process: N replicas allow N times the rate.
    #[default]
    Local,
    /// In a store every replica shares, through a `rate_limit::SharedGcra` (Redis with the
    /// `redis` feature): one limit for the whole fleet.
    Redis,
}

/// What a shared limiter does when its store cannot answer.
///
/// Written as a plain string in TOML: `on_store_error = "open"` or `"closed"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Let the request through (availability first): an outage of the store lifts the limit.
    #[default]
    Open,
    /// Answer `503` with `Retry-After` (protection first): an outage of the store stops the
    /// route.
    Closed,
}

/// Settings of a `RateLimitLayer` (`rate_limit`): buckets in process, or with
/// `store = "redis"` in a store all replicas share.
///
/// ```toml
/// per_second = 20       # sustained rate per key
/// burst = 40            # requests a fresh key may make at once (default: per_second)
/// key = "header"        # global | peer_ip | header | session_id | api_key
/// key_header = "x-api-key"
/// max_keys = 100000     # buckets held in process; the idlest are evicted beyond it
/// store = "redis"       # local (default) | redis: one limit across all gateways
/// on_store_error = "open"   # open (default) | closed: 503 while Redis is down
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
    /// Peers whose `X-Forwarded-For` is believed when `key = "peer_ip"`, or `"api_key"`
    /// for requests without a verified key (your load balancers). Ignored otherwise.
    /// Default none: the peer address is the key.
    pub trusted_proxies: Vec<IpAddr>,
    /// With `store = "local"`: most keys holding a bucket at once. A new key beyond it first
    /// evicts the idlest keys (full buckets, then those closest to full: the keys seen least
    /// recently and least heavily), a sixteenth of the map at a time, so random keys cannot
    /// grow memory without bound (a key costs about 64 bytes). Must be at least 1. Default
    /// 100000.
    pub max_keys: usize,
    /// Where the buckets live. Default `local`.
    pub store: LimitStore,
    /// With `store = "redis"`: what to do when Redis does not answer. Default `open`.
    pub on_store_error: FailMode,
    /// With `store = "redis"`: how many keys known to be over their limit are remembered
    /// locally, so a hot abuser's requests are refused without a Redis call until its
    /// `Retry-After` has passed. 0 turns the cache off. Default 10000.
    pub over_limit_cache: usize,
}

impl Default for RateLimitPolicy {
    fn default() -> Self {
        Self {
            per_second: 100,
            burst: None,
            key: KeyKind::Global,
            key_header: None,
            trusted_proxies: Vec::new(),
            max_keys: DEFAULT_MAX_KEYS,
            store: LimitStore::Local,
            on_store_error: FailMode::Open,
            over_limit_cache: 10_000,
        }
    }
}

impl RateLimitPolicy {
    /// The bucket size: [`burst`](Self::burst), else [`per_second`](Self::per_second).
    pub fn burst_size(&self) -> u32 {
        self.burst.unwrap_or(self.per_second)
    }

    /// Checks the settings: `per_second`, `max_keys` and the burst at least 1, and with
    /// `key = "header"` a `key_header` that is a header name.
    pub fn validate(&self) -> Result<(), PolicyError> {
        at_least_one("per_second", u64::from(self.per_second))?;
        at_least_one("max_keys", self.max_keys as u64)?;
        at_least_one("burst", u64::from(self.burst_size()))?;
        if self.key == KeyKind::Header {
            let Some(name) = &self.key_header else {
                let needed_by = "`key = \"header\"`";
                return Err(PolicyError::new(
                    "key_header",
                    Problem::Missing { needed_by },
                ));
            };
            if !is_header_name(name) {
                let (value, expected) = (name.clone(), "a valid header name");
                return Err(PolicyError::new(
                    "key_header",
                    Problem::Invalid { value, expected },
                ));
            }
        }
        Ok(())
    }
}

/// A field name as HTTP allows it (RFC 9110 §5.1: one or more `tchar`), any case, at most
/// 65535 bytes: what `http::HeaderName` accepts.
fn is_header_name(name: &str) -> bool {
    (1..=65_535).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_are_checked_as_the_http_crate_checks_them() {
        for name in [
            "x-api-key",
            "Authorization",
            "a",
            "x_b.c~!#$%&'*+^`|",
            &"a".repeat(65_535),
        ] {
            assert!(is_header_name(name), "{name}");
            assert!(http::HeaderName::try_from(name).is_ok(), "{name}");
        }
        for name in [
            "",
            "x y",
            "x:y",
            "é",
            "a\n",
            "(x)",
            "x/y",
            &"a".repeat(65_536),
        ] {
            assert!(!is_header_name(name), "{name:?}");
            assert!(http::HeaderName::try_from(name).is_err(), "{name:?}");
        }
    }
}
