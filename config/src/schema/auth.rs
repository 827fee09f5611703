use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[auth]`: credentials for the session API and for SSE streams.
///
/// The defaults are deliberately unusable (no keys, empty secret): validation rejects them, so
/// a gateway never starts open or with a guessable secret.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// API keys accepted on the session API (`Authorization: Bearer <key>`). At least one is
    /// required; each is at least 16 visible ASCII characters with no whitespace, and keys
    /// must be distinct. Default `[]` (fails validation).
    pub api_keys: Vec<String>,
    /// Secret that signs (HMAC) the per-session stream tokens handed to browsers, at least
    /// 32 bytes. Changing it invalidates every outstanding token. Default `""` (fails
    /// validation).
    pub stream_token_secret: String,
    /// How long a stream token stays valid after it is issued, in seconds. At least 1.
    /// Default 86_400 (one day).
    pub stream_token_ttl_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            api_keys: Vec::new(),
            stream_token_secret: String::new(),
            stream_token_ttl_secs: 86_400,
        }
    }
}

impl AuthConfig {
    /// [`stream_token_ttl_secs`](Self::stream_token_ttl_secs) as a [`Duration`].
    pub fn stream_token_ttl(&self) -> Duration {
        Duration::from_secs(self.stream_token_ttl_secs)
    }
}
