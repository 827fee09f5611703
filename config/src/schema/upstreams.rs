use std::fmt;
use std::net::{AddrParseError, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// How an upstream pool picks the peer for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// `"round_robin"`: peers take turns.
    #[default]
    RoundRobin,
    /// `"consistent_hash"`: a key taken from the request ([`HashOn`]) picks the peer, so
    /// requests with the same key keep reaching the same peer while the pool is unchanged.
    ConsistentHash,
}

/// The request key hashed by `balance = "consistent_hash"`.
///
/// In TOML a string: `"session_id"` or `"header:<name>"`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HashOn {
    /// `"session_id"`: the `{id}` of a `/v2/sessions/{id}/...` request path, or, for other
    /// paths, the value of the `x-session-id` header. Keeps every request of one agent
    /// session on one peer.
    #[default]
    SessionId,
    /// `"header:<name>"`: the value of the named request header, e.g. `"header:x-user"`.
    /// The name must be a valid HTTP header name (token characters); it is stored
    /// lower-case, as HTTP header names are case-insensitive.
    Header(String),
}

impl HashOn {
    /// Parses the TOML form; the error says what is wrong.
    fn parse(value: &str) -> Result<Self, String> {
        if value == "session_id" {
            return Ok(HashOn::SessionId);
        }
        let Some(name) = value.strip_prefix("header:") else {
            return Err(format!(
                "invalid hash_on {value:?}: expected \"session_id\" or \"header:<name>\""
            ));
        };
        if name.is_empty() {
            return Err("invalid hash_on \"header:\": the header name is missing".to_owned());
        }
        if !name.bytes().all(is_token_byte) {
            return Err(format!(
                "invalid hash_on {value:?}: {name:?} is not a valid HTTP header name"
            ));
        }
        Ok(HashOn::Header(name.to_ascii_lowercase()))
    }
}

/// RFC 9110 `tchar`: the characters allowed in a header name.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl fmt::Display for HashOn {
    /// The TOML form: `session_id` or `header:<name>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashOn::SessionId => f.write_str("session_id"),
            HashOn::Header(name) => write!(f, "header:{name}"),
        }
    }
}

impl Serialize for HashOn {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HashOn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HashOnVisitor;

        impl Visitor<'_> for HashOnVisitor {
            type Value = HashOn;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"session_id\" or \"header:<name>\"")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<HashOn, E> {
                HashOn::parse(value).map_err(E::custom)
            }
        }

        deserializer.deserialize_str(HashOnVisitor)
    }
}

/// One `[upstreams.NAME]` table: a pool of peers that `kind = "upstream"` routes proxy to.
///
/// `NAME` may contain only ASCII letters, digits, `_` and `-`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The pool's peers, each `"IP:port"` such as `"10.0.0.11:8080"` or `"[fd00::11]:8080"`.
    /// DNS names are not supported yet. At least one, none repeated, port not 0.
    /// Default `[]` (fails validation).
    pub peers: Vec<String>,
    /// `"round_robin"` or `"consistent_hash"`. Default `"round_robin"`.
    pub balance: Balance,
    /// The key hashed when `balance = "consistent_hash"` (ignored otherwise):
    /// `"session_id"` or `"header:<name>"` (see [`HashOn`]). Default `"session_id"`.
    pub hash_on: HashOn,
    /// Deadline for opening a connection to a peer, in milliseconds. At least 1.
    /// Default 1_000.
    pub connect_timeout_ms: u64,
    /// Longest wait between two reads from a peer, in milliseconds; a peer silent for longer
    /// has the request failed. 0 means no limit, for SSE or other long-lived streams.
    /// Default 30_000.
    pub read_timeout_ms: u64,
    /// How long an idle keep-alive connection to a peer stays in the pool for reuse, in
    /// milliseconds. At least 1. Default 60_000.
    pub idle_timeout_ms: u64,
    /// When connecting to a peer fails, retry the request once on another peer. Only
    /// connect failures are retried: nothing has reached the peer yet. Default `true`.
    pub retry_connect: bool,
    /// `[upstreams.NAME.health_check]`: active health checks. Default unset: no active
    /// checks, every peer is considered healthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckConfig>,
    /// `[upstreams.NAME.tls]`: connect to the peers over TLS (HTTP/1.1), health checks
    /// included. Default unset: cleartext HTTP/1.1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTlsConfig>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            peers: Vec::new(),
            balance: Balance::RoundRobin,
            hash_on: HashOn::SessionId,
            connect_timeout_ms: 1_000,
            read_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            retry_connect: true,
            health_check: None,
            tls: None,
        }
    }
}

impl UpstreamConfig {
    /// [`peers`](Self::peers) parsed; after validation this cannot fail.
    pub fn peer_addrs(&self) -> Result<Vec<SocketAddr>, AddrParseError> {
        self.peers.iter().map(|peer| peer.parse()).collect()
    }

    /// [`connect_timeout_ms`](Self::connect_timeout_ms) as a [`Duration`].
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// [`read_timeout_ms`](Self::read_timeout_ms) as a [`Duration`]; `None` for 0 (no limit).
    pub fn read_timeout(&self) -> Option<Duration> {
        (self.read_timeout_ms > 0).then(|| Duration::from_millis(self.read_timeout_ms))
    }

    /// [`idle_timeout_ms`](Self::idle_timeout_ms) as a [`Duration`].
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
}

/// `[upstreams.NAME.health_check]`: periodic HTTP checks that take failing peers out of the
/// pool and bring them back once they pass again.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Path requested with `GET` on each peer. Must start with `/`. Default `"/healthz"`.
    pub path: String,
    /// Time between two checks of a peer, in milliseconds. At least 100. Default 1_000.
    pub interval_ms: u64,
    /// Deadline for one check (connect and response), in milliseconds; a slower check
    /// fails. At least 1. Default 1_000.
    pub timeout_ms: u64,
    /// Consecutive passing checks that bring an unhealthy peer back. At least 1. Default 1.
    pub healthy_threshold: usize,
    /// Consecutive failing checks that take a healthy peer out. At least 1. Default 1.
    pub unhealthy_threshold: usize,
    /// Response status a passing check returns; any other status fails. 100..=599.
    /// Default 200.
    pub expect_status: u16,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self {
            path: "/healthz".to_owned(),
            interval_ms: 1_000,
            timeout_ms: 1_000,
            healthy_threshold: 1,
            unhealthy_threshold: 1,
            expect_status: 200,
        }
    }
}

impl HealthCheckConfig {
    /// [`interval_ms`](Self::interval_ms) as a [`Duration`].
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// [`timeout_ms`](Self::timeout_ms) as a [`Duration`].
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// `[upstreams.NAME.tls]`: TLS to the group's peers. Peers stay `"IP:port"`; the name the
/// gateway expects them to prove is given here.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// The name sent as SNI, and that every peer's certificate must be valid for: a DNS
    /// name such as `"api.internal"`, or an IP address (which the certificate must then
    /// list). Required.
    pub server_name: String,
    /// PEM file of the CA certificates a peer's certificate must chain to (only
    /// `CERTIFICATE` sections; a relative path is taken from the working directory), read
    /// when the configuration is loaded or reloaded. Default unset: the system's roots (its
    /// CA bundle; `SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}
