//! Who may call what: API keys for agent-side calls, stream tokens for stream reads.
//!
//! Stream tokens let a browser `EventSource` (which cannot set headers) read one session:
//! `v1.<expiry unix seconds>.<base64url HMAC-SHA256(secret, "v1.<session id>.<expiry>")>`.
//! They are stateless, so any gateway node sharing the secret accepts them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::store::SessionId;

/// Why a credential was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credential was presented.
    #[error("missing credentials")]
    Missing,
    /// The credential is malformed, unknown or its signature does not verify.
    #[error("invalid credentials")]
    Invalid,
    /// The stream token has expired.
    #[error("stream token expired")]
    Expired,
}

/// The configured API keys, stored as SHA-256 digests and compared in constant time.
#[derive(Debug, Clone)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl ApiKeys {
    /// Keys from configuration.
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            digests: keys.into_iter().map(|k| Sha256::digest(k).into()).collect(),
        }
    }

    /// Checks a presented key; on success returns its fingerprint (the owner recorded on the
    /// sessions it creates: 16 hex digits of its SHA-256, never the key itself).
    pub fn verify(&self, presented: Option<&str>) -> Result<String, AuthError> {
        let presented = presented.ok_or(AuthError::Missing)?;
        let digest: [u8; 32] = Sha256::digest(presented).into();
        // Compare against every key without stopping early: timing reveals nothing.
        let found = self
            .digests
            .iter()
            .fold(false, |found, d| found | constant_time_eq(d, &digest));
        if !found {
            return Err(AuthError::Invalid);
        }
        Ok(digest[..8].iter().map(|b| format!("{b:02x}")).collect())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Issues and verifies per-session stream tokens.
#[derive(Clone)]
pub struct StreamTokens {
    mac: Hmac<Sha256>,
    ttl: Duration,
}

impl std::fmt::Debug for StreamTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamTokens")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl StreamTokens {
    /// Tokens signed with `secret`, valid for `ttl`.
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        // HMAC accepts keys of any length, so this cannot fail.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        Self { mac, ttl }
    }

    /// A token for `id`; returns it with its expiry (unix seconds).
    pub fn issue(&self, id: &SessionId) -> (String, u64) {
        let expires = unix_now() + self.ttl.as_secs();
        (self.token(id, expires), expires)
    }

    fn token(&self, id: &SessionId, expires: u64) -> String {
        let sig = self.signature(id.as_str(), expires);
        format!("v1.{expires}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    fn signature(&self, id: &str, expires: u64) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(format!("v1.{id}.{expires}").as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Checks that `token` grants reading `id` now.
    pub fn verify(&self, id: &SessionId, token: Option<&str>) -> Result<(), AuthError> {
        let token = token.ok_or(AuthError::Missing)?;
        let mut parts = token.splitn(3, '.');
        let (Some("v1"), Some(expires), Some(sig)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Invalid);
        };
        let expires: u64 = expires.parse().map_err(|_| AuthError::Invalid)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| AuthError::Invalid)?;
        if !constant_time_eq(&self.signature(id.as_str(), expires), &sig) {
            // A token for another session fails here too: the id is part of what is signed.
            return Err(AuthError::Invalid);
        }
        if expires <= unix_now() {
            return Err(AuthError::Expired);
        }
        Ok(())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_verify_and_fingerprint() {
        let keys = ApiKeys::new(["key-one-0123456789", "key-two-0123456789"]);
        let a = keys.verify(Some("key-one-0123456789")).unwrap();
        let b = keys.verify(Some("key-two-0123456789")).unwrap();
        assert_eq!(a.len(), 16);
        assert_ne!(a, b);
        assert_eq!(keys.verify(None), Err(AuthError::Missing));
        assert_eq!(keys.verify(Some("nope")), Err(AuthError::Invalid));
    }

    #[test]
    fn stream_tokens_bind_session_and_expiry() {
        let tokens =
            StreamTokens::new(b"0123456789abcdef0123456789abcdef", Duration::from_secs(60));
        let id: SessionId = "s1".parse().unwrap();
        let other: SessionId = "s2".parse().unwrap();
        let (token, _) = tokens.issue(&id);
        assert_eq!(tokens.verify(&id, Some(&token)), Ok(()));
        assert_eq!(tokens.verify(&other, Some(&token)), Err(AuthError::Invalid));
        assert_eq!(tokens.verify(&id, None), Err(AuthError::Missing));
        assert_eq!(tokens.verify(&id, Some("v1.x.y")), Err(AuthError::Invalid));
        let expired = tokens.token(&id, unix_now() - 1);
        assert_eq!(tokens.verify(&id, Some(&expired)), Err(AuthError::Expired));
        let forged =
            StreamTokens::new(b"another-secret-another-secret-xx", Duration::from_secs(60));
        assert_eq!(
            tokens.verify(&id, Some(&forged.issue(&id).0)),
            Err(AuthError::Invalid)
        );
    }
}
