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

use agentgate_config::AuthConfig;

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
    /// The stream token is not exactly `v1.<expiry>.<signature>` in canonical form.
    #[error("stream token is not in the form v1.<expiry>.<signature>")]
    Malformed,
    /// The stream token's expiry lies further ahead than this gateway's token lifetime
    /// allows: no gateway with this configuration issued it.
    #[error("stream token expiry is further ahead than auth.stream_token_ttl_secs allows")]
    ExpiryTooFar,
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
///
/// One secret signs; more may verify (rotation: tokens signed with the previous secret keep
/// working until they expire). A token is accepted only in canonical form, signed by one of
/// the secrets, not expired, and expiring no later than now + ttl + [`EXPIRY_SKEW`].
#[derive(Clone)]
pub struct StreamTokens {
    /// The signing secret's MAC first, then the verify-only ones.
    macs: Vec<Hmac<Sha256>>,
    ttl: Duration,
}

/// How far a token's expiry may exceed now + ttl: the clocks of the issuing and checking
/// nodes may disagree by this much.
pub const EXPIRY_SKEW: Duration = Duration::from_secs(AuthConfig::TOKEN_EXPIRY_SKEW_SECS);

/// Characters of a signature: unpadded base64url of 32 bytes.
const SIGNATURE_CHARS: usize = 43;

impl std::fmt::Debug for StreamTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamTokens")
            .field("ttl", &self.ttl)
            .field("secrets", &self.macs.len())
            .finish_non_exhaustive()
    }
}

impl StreamTokens {
    /// Tokens signed with `secret`, valid for `ttl`.
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        Self {
            macs: vec![mac_of(secret)],
            ttl,
        }
    }

    /// Tokens signed and verified as configured in `[auth]`: the first of
    /// [`AuthConfig::token_secrets`] signs, every one verifies.
    pub fn from_config(auth: &AuthConfig) -> Self {
        let mut secrets = auth.token_secrets();
        let signing = secrets.next().unwrap_or_default();
        Self::new(signing.as_bytes(), auth.stream_token_ttl())
            .also_verifying(secrets.map(str::as_bytes))
    }

    /// Also accepts tokens signed with each of `secrets` (retired secrets, during a
    /// rotation); new tokens are still signed with the first secret.
    pub fn also_verifying<'a>(mut self, secrets: impl IntoIterator<Item = &'a [u8]>) -> Self {
        self.macs.extend(secrets.into_iter().map(mac_of));
        self
    }

    /// A token for `id`; returns it with its expiry (unix seconds).
    pub fn issue(&self, id: &SessionId) -> (String, u64) {
        let expires = unix_now() + self.ttl.as_secs();
        (self.token(id, expires), expires)
    }

    fn token(&self, id: &SessionId, expires: u64) -> String {
        let sig = signature(&self.macs[0], id.as_str(), expires);
        format!("v1.{expires}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    /// Checks that `token` grants reading `id` now.
    pub fn verify(&self, id: &SessionId, token: Option<&str>) -> Result<(), AuthError> {
        let token = token.ok_or(AuthError::Missing)?;
        let (expires, sig) = parse(token).ok_or(AuthError::Malformed)?;
        // Try every secret without stopping early: timing tells nothing about which matched.
        let signed = self.macs.iter().fold(false, |found, mac| {
            found | constant_time_eq(&signature(mac, id.as_str(), expires), &sig)
        });
        if !signed {
            // A token for another session fails here too: the id is part of what is signed.
            return Err(AuthError::Invalid);
        }
        let now = unix_now();
        if expires > now.saturating_add(self.ttl.as_secs() + EXPIRY_SKEW.as_secs()) {
            return Err(AuthError::ExpiryTooFar);
        }
        if expires <= now {
            return Err(AuthError::Expired);
        }
        Ok(())
    }
}

fn mac_of(secret: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
}

fn signature(mac: &Hmac<Sha256>, id: &str, expires: u64) -> [u8; 32] {
    let mut mac = mac.clone();
    mac.update(format!("v1.{id}.{expires}").as_bytes());
    mac.finalize().into_bytes().into()
}

/// The expiry and signature of a token in canonical form — `v1.`, the expiry in decimal
/// digits without sign or leading zeros, `.`, 43 characters of unpadded base64url that
/// re-encode to themselves — and nothing else. Any other spelling of the same values is
/// refused, so one token has exactly one text.
fn parse(token: &str) -> Option<(u64, [u8; 32])> {
    let (expires_text, sig_text) = token.strip_prefix("v1.")?.split_once('.')?;
    // u64's parser would also take "+5" and "007": only what Display writes is canonical.
    let digits = !expires_text.is_empty() && expires_text.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = expires_text.len() > 1 && expires_text.starts_with('0');
    if !digits || leading_zero || sig_text.len() != SIGNATURE_CHARS {
        return None;
    }
    let expires: u64 = expires_text.parse().ok()?;
    let mut sig = [0u8; 32];
    let decoded = URL_SAFE_NO_PAD.decode_slice(sig_text, &mut sig).ok()?;
    let mut again = [0u8; SIGNATURE_CHARS];
    let encoded = URL_SAFE_NO_PAD.encode_slice(sig, &mut again).ok()?;
    (decoded == sig.len() && encoded == SIGNATURE_CHARS && again == sig_text.as_bytes())
        .then_some((expires, sig))
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

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn tokens(secret: &[u8]) -> StreamTokens {
        StreamTokens::new(secret, Duration::from_secs(60))
    }

    #[test]
    fn stream_tokens_bind_session_and_expiry() {
        let tokens = tokens(SECRET);
        let id: SessionId = "s1".parse().unwrap();
        let other: SessionId = "s2".parse().unwrap();
        let (token, _) = tokens.issue(&id);
        assert_eq!(tokens.verify(&id, Some(&token)), Ok(()));
        assert_eq!(tokens.verify(&other, Some(&token)), Err(AuthError::Invalid));
        assert_eq!(tokens.verify(&id, None), Err(AuthError::Missing));
        assert_eq!(
            tokens.verify(&id, Some("v1.x.y")),
            Err(AuthError::Malformed)
        );
        let expired = tokens.token(&id, unix_now() - 1);
        assert_eq!(tokens.verify(&id, Some(&expired)), Err(AuthError::Expired));
        let forged = self::tokens(b"another-secret-another-secret-xx");
        assert_eq!(
            tokens.verify(&id, Some(&forged.issue(&id).0)),
            Err(AuthError::Invalid)
        );
    }

    #[test]
    fn expiry_beyond_ttl_and_skew_is_refused() {
        let tokens = tokens(SECRET);
        let id: SessionId = "s1".parse().unwrap();
        let now = unix_now();
        let edge = tokens.token(&id, now + 60 + EXPIRY_SKEW.as_secs() - 1);
        assert_eq!(tokens.verify(&id, Some(&edge)), Ok(()));
        for expires in [
            now + 60 + EXPIRY_SKEW.as_secs() + 5,
            4_102_444_800,
            u64::MAX,
        ] {
            let far = tokens.token(&id, expires);
            assert_eq!(
                tokens.verify(&id, Some(&far)),
                Err(AuthError::ExpiryTooFar),
                "expiry {expires}"
            );
        }
    }

    #[test]
    fn only_the_canonical_spelling_is_accepted() {
        let tokens = tokens(SECRET);
        let id: SessionId = "s1".parse().unwrap();
        let (token, expires) = tokens.issue(&id);
        let sig = token.rsplit('.').next().unwrap();
        assert_eq!(sig.len(), SIGNATURE_CHARS);
        // The last character carries 2 unused bits; flipping them decodes to the same bytes.
        let last = sig.as_bytes()[42];
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let index = alphabet.iter().position(|&c| c == last).unwrap();
        let twin = char::from(alphabet[index ^ 1]);
        let spellings = [
            format!("v1.0{expires}.{sig}"),
            format!("v1.+{expires}.{sig}"),
            format!("v1.-{expires}.{sig}"),
            format!("v1. {expires}.{sig}"),
            format!("v1.{expires}.{sig}="),
            format!("v1.{expires}.{sig}.x"),
            format!("v1.{expires}.{sig} "),
            format!(" {token}"),
            format!("V1.{expires}.{sig}"),
            format!("v01.{expires}.{sig}"),
            format!("v1.{expires}.{}", sig.replace('-', "+").replace('_', "/")),
            format!("v1.{expires}.{}{twin}", &sig[..42]),
            format!("v1.{expires}..{sig}"),
            format!("v1..{sig}"),
            format!("v1.{expires}."),
            "v1".to_owned(),
            String::new(),
        ];
        for spelling in spellings {
            if spelling == token {
                continue; // a replacement that changed nothing
            }
            assert_eq!(
                tokens.verify(&id, Some(&spelling)),
                Err(AuthError::Malformed),
                "{spelling:?}"
            );
        }
        assert_eq!(tokens.verify(&id, Some(&token)), Ok(()));
    }

    #[test]
    fn rotation_signs_with_the_first_and_verifies_all() {
        let old = b"old-secret-old-secret-old-secret-xx";
        let new = b"new-secret-new-secret-new-secret-xx";
        let id: SessionId = "s1".parse().unwrap();
        let before = tokens(old).issue(&id).0;
        let rotated = tokens(new).also_verifying([&old[..]]);
        assert_eq!(rotated.verify(&id, Some(&before)), Ok(()));
        let after = rotated.issue(&id).0;
        assert_eq!(tokens(new).verify(&id, Some(&after)), Ok(()));
        assert_eq!(
            tokens(old).verify(&id, Some(&after)),
            Err(AuthError::Invalid)
        );
        // Once the old secret is dropped its tokens stop working.
        assert_eq!(
            tokens(new).verify(&id, Some(&before)),
            Err(AuthError::Invalid)
        );
    }

    #[test]
    fn from_config_uses_the_list_or_the_single_secret() {
        let id: SessionId = "s1".parse().unwrap();
        let mut auth = AuthConfig {
            stream_token_secret: String::from_utf8(SECRET.to_vec()).unwrap(),
            stream_token_ttl_secs: 60,
            ..AuthConfig::default()
        };
        let single = StreamTokens::from_config(&auth).issue(&id).0;
        assert_eq!(tokens(SECRET).verify(&id, Some(&single)), Ok(()));
        auth.stream_token_secret.clear();
        auth.stream_token_secrets =
            vec!["n".repeat(32), String::from_utf8(SECRET.to_vec()).unwrap()];
        let listed = StreamTokens::from_config(&auth);
        assert_eq!(listed.verify(&id, Some(&single)), Ok(()));
        let fresh = listed.issue(&id).0;
        assert_eq!(tokens(&[b'n'; 32]).verify(&id, Some(&fresh)), Ok(()));
    }
}
