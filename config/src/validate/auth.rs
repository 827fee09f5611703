//! `[auth]`: API keys, stream-token secrets, and no published example credential on a
//! public listener.

use super::{Problems, check_secrets, duplicates};
use crate::published::GENERATE_HINT;
use crate::schema::{AuthConfig, Config};

/// Shortest accepted stream-token secret, in bytes (256 bits for HMAC-SHA256).
const MIN_SECRET_BYTES: usize = 32;

impl Config {
    pub(super) fn check_auth(&self, p: &mut Problems) {
        let a = &self.auth;
        p.require(
            !a.api_keys.is_empty(),
            "auth.api_keys",
            "at least one API key is required",
        );
        check_secrets(p, "auth.api_keys", &a.api_keys);
        self.check_token_secrets(p);
        p.require(
            a.stream_token_ttl_secs >= 1,
            "auth.stream_token_ttl_secs",
            "must be at least 1",
        );
        if !self.listens_on_loopback_only() {
            for key in self.published_credentials() {
                p.push(
                    &key,
                    format!(
                        "is an example value published with agentgate, refused while \
                         a public listener (server.listen, server.tls.listen) is not on loopback; \
                         {GENERATE_HINT}"
                    ),
                );
            }
        }
    }

    pub(super) fn check_token_secrets(&self, p: &mut Problems) {
        let a = &self.auth;
        if a.stream_token_secrets.is_empty() {
            p.require(
                a.stream_token_secret.len() >= MIN_SECRET_BYTES,
                "auth.stream_token_secret",
                format!(
                    "must be at least {MIN_SECRET_BYTES} bytes (it is {}); {GENERATE_HINT}",
                    a.stream_token_secret.len()
                ),
            );
            return;
        }
        p.require(
            a.stream_token_secret.is_empty(),
            "auth.stream_token_secret",
            "set either auth.stream_token_secret or auth.stream_token_secrets, not both",
        );
        p.require(
            a.stream_token_secrets.len() <= AuthConfig::MAX_TOKEN_SECRETS,
            "auth.stream_token_secrets",
            format!("at most {} secrets", AuthConfig::MAX_TOKEN_SECRETS),
        );
        for (i, secret) in a.stream_token_secrets.iter().enumerate() {
            p.require(
                secret.len() >= MIN_SECRET_BYTES,
                &format!("auth.stream_token_secrets[{i}]"),
                format!(
                    "must be at least {MIN_SECRET_BYTES} bytes (it is {}); {GENERATE_HINT}",
                    secret.len()
                ),
            );
        }
        for (i, first) in duplicates(a.stream_token_secrets.iter().enumerate()) {
            p.push(
                &format!("auth.stream_token_secrets[{i}]"),
                format!("duplicates auth.stream_token_secrets[{first}]"),
            );
        }
    }
}
