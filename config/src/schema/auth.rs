use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[auth]`: credentials for the session API and for SSE streams.
///
/// The defaults are deliberately unusable (no keys, no secret): validation rejects them, so
/// a gateway never starts open or with a guessable secret. Values published with agentgate
/// (the reference file's, the README's, the examples' and benchmarks'; see
/// [`PUBLISHED_CREDENTIALS`](crate::PUBLISHED_CREDENTIALS)) are accepted only while every
/// `server.listen` address is loopback.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// API keys accepted on the session API (`Authorization: Bearer <key>`). At least one is
    /// required; each is at least 16 visible ASCII characters with no whitespace, and keys
    /// must be distinct. Default `[]` (fails validation).
    pub api_keys: Vec<String>,
    /// Secret that signs (HMAC) the per-session stream tokens handed to browsers, at least
    /// 32 bytes: the one-secret form of [`stream_token_secrets`](Self::stream_token_secrets).
    /// Set this or `stream_token_secrets`, not both. Changing it invalidates every
    /// outstanding token (rotate with `stream_token_secrets` instead). Default `""` (fails
    /// validation unless `stream_token_secrets` is set).
    pub stream_token_secret: String,
    /// Secrets for rotating the stream-token secret without cutting live viewers: the first
    /// signs new tokens, every one verifies. Rotate by putting a new secret first and keeping
    /// the old one after it until its tokens have expired (`stream_token_ttl_secs`), then
    /// dropping it; a reload (SIGHUP) applies the list. Each is at least 32 bytes, none
    /// repeated, at most [`MAX_TOKEN_SECRETS`](Self::MAX_TOKEN_SECRETS). Default `[]` (use
    /// `stream_token_secret`).
    pub stream_token_secrets: Vec<String>,
    /// How long a stream token stays valid after it is issued, in seconds. At least 1. A
    /// token whose expiry lies further ahead than this (plus
    /// [`TOKEN_EXPIRY_SKEW_SECS`](Self::TOKEN_EXPIRY_SKEW_SECS) for clocks of nodes that
    /// disagree) is refused: no gateway with this setting issued it. Default 86_400 (one
    /// day).
    pub stream_token_ttl_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            api_keys: Vec::new(),
            stream_token_secret: String::new(),
            stream_token_secrets: Vec::new(),
            stream_token_ttl_secs: 86_400,
        }
    }
}

impl AuthConfig {
    /// Most entries in [`stream_token_secrets`](Self::stream_token_secrets): every stream
    /// connection may try each one.
    pub const MAX_TOKEN_SECRETS: usize = 8;

    /// Seconds by which a token's expiry may exceed now + `stream_token_ttl_secs`: room for
    /// the clocks of the node that issued it and the node that checks it to disagree.
    pub const TOKEN_EXPIRY_SKEW_SECS: u64 = 60;

    /// [`stream_token_ttl_secs`](Self::stream_token_ttl_secs) as a [`Duration`].
    pub fn stream_token_ttl(&self) -> Duration {
        Duration::from_secs(self.stream_token_ttl_secs)
    }

    /// The stream-token secrets in use, the signing one first: `stream_token_secrets`, or
    /// `stream_token_secret` alone when the list is empty.
    pub fn token_secrets(&self) -> impl Iterator<Item = &str> {
        let one = self
            .stream_token_secrets
            .is_empty()
            .then_some(self.stream_token_secret.as_str());
        one.into_iter()
            .chain(self.stream_token_secrets.iter().map(String::as_str))
    }
}
