//! Exactly-once writes: an idempotency key on append and complete.
//!
//! An agent whose append timed out cannot tell whether the store applied it. Sent with an
//! [`IdempotencyKey`], the call can be retried safely: the store records, in the same atomic
//! write, the key, a digest of the request and its result; a later call with the same key
//! writes nothing and gets the recorded result back ([`Applied::replayed`]), and a call
//! with the same key but another request is refused
//! ([`StoreError::IdempotencyKeyReused`](super::StoreError::IdempotencyKeyReused)).
//!
//! - **Scope**: a session. Keys live with the session and expire with it (its TTL while it
//!   runs, its retention once completed), so a retried append still gets its original ids
//!   after the session completed, and a retried complete its original event id.
//! - **Checked before the state**: the owner must match (another key's call is `Forbidden`
//!   as always), then a recorded key answers, whatever the session's status now; only a
//!   fresh call goes on to the status and quota checks.
//! - **Only successes are recorded**: a refused call wrote nothing, so its retry is simply
//!   evaluated again.
//! - **Bound**: at most [`MAX_KEYS_PER_SESSION`] keys per session; recording one more
//!   evicts the oldest. Each record holds a 32-hex-digit name, a 32-hex-digit request digest
//!   and the result's ids (one for complete, one per event of the batch, at most
//!   `api::events::MAX_BATCH`).
//! - **Nothing of the key is stored or logged**: only a 128-bit prefix of its SHA-256
//!   ([`IdempotencyKey::field`]), which also bounds the size of the name.
//!
//! Where each engine keeps them: the memory engine in the session itself; Redis in
//! `ag:{<sid>}:idem` (HASH: name → `<digest> <id> <id>...`) and `ag:{<sid>}:idem:order`
//! (LIST of names, oldest first, for the eviction), written by the same Lua script as the
//! events, with the session's TTL.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//!
//! use agentgate::store::memory::{MemoryLimits, MemoryStore};
//! use agentgate::store::{IdempotencyKey, NewEvent, NewSession, SessionStore, StoreError};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = MemoryStore::new(MemoryLimits {
//!     events_maxlen: 1000,
//!     retention: Duration::from_secs(60),
//!     session_ttl: Duration::from_secs(60),
//!     quotas: Default::default(),
//! });
//! let id = "s1".parse().unwrap();
//! let session = NewSession { owner: "o".into(), metadata: "null".into() };
//! store.create(&id, session).await.unwrap();
//! let delta = [NewEvent { kind: "delta".into(), data: "1".into() }];
//! let key = IdempotencyKey::new(b"call-1").unwrap();
//!
//! let first = store.append_idempotent(&id, "o", &delta, Some(&key)).await.unwrap();
//! // The response was lost; the agent retries: the same ids, nothing written twice.
//! let retry = store.append_idempotent(&id, "o", &delta, Some(&key)).await.unwrap();
//! assert!(!first.replayed && retry.replayed);
//! assert_eq!(retry.value, first.value);
//! assert_eq!(store.state(&id).await.unwrap().unwrap().event_count, 1);
//! // The same key for other events is refused.
//! let other = [NewEvent { kind: "delta".into(), data: "2".into() }];
//! let reused = store.append_idempotent(&id, "o", &other, Some(&key)).await;
//! assert!(matches!(reused, Err(StoreError::IdempotencyKeyReused)));
//! # });
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use super::{Completion, EventId, NewEvent};

/// Longest accepted key, in bytes.
pub const MAX_KEY_LEN: usize = 128;

/// Keys a session remembers; recording one more evicts the oldest.
pub const MAX_KEYS_PER_SESSION: usize = 128;

/// A validated idempotency key, held only as a hash of itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    field: String,
}

impl IdempotencyKey {
    /// Checks `raw`: 1 to [`MAX_KEY_LEN`] visible ASCII characters (`!` to `~`, no space).
    pub fn new(raw: &[u8]) -> Result<Self, &'static str> {
        if raw.is_empty() || raw.len() > MAX_KEY_LEN {
            return Err("must be 1 to 128 characters");
        }
        if !raw.iter().all(u8::is_ascii_graphic) {
            return Err("may contain only visible ASCII characters (no spaces)");
        }
        Ok(Self {
            field: hex128(Sha256::digest(raw).as_slice()),
        })
    }

    /// The name the store records the key under: 32 hex digits of its SHA-256.
    pub fn field(&self) -> &str {
        &self.field
    }
}

/// What an idempotent write returns: its result, and whether it was recorded by an earlier
/// call with the same key (nothing was written this time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied<T> {
    /// The result: the ids the write produced (then).
    pub value: T,
    /// True when an earlier call with the same key wrote it; this one wrote nothing.
    pub replayed: bool,
}

impl<T> Applied<T> {
    /// A result written by this call.
    pub fn fresh(value: T) -> Self {
        Self {
            value,
            replayed: false,
        }
    }
}

/// The digest of an append of `events` (32 hex digits): equal for the same kinds and data
/// in the same order, whatever the key.
pub fn append_digest(events: &[NewEvent]) -> String {
    let mut hash = Sha256::new();
    hash.update(b"append");
    for event in events {
        framed(&mut hash, &event.kind);
        framed(&mut hash, &event.data);
    }
    hex128(hash.finalize().as_slice())
}

/// The digest of a complete with `completion` (32 hex digits).
pub fn complete_digest(completion: &Completion) -> String {
    let mut hash = Sha256::new();
    hash.update(b"complete");
    framed(&mut hash, &completion.status);
    framed(&mut hash, &completion.final_response);
    hex128(hash.finalize().as_slice())
}

/// Feeds `text` with its length first, so no two sequences of strings hash alike.
fn framed(hash: &mut Sha256, text: &str) {
    hash.update((text.len() as u64).to_be_bytes());
    hash.update(text.as_bytes());
}

/// The first 16 bytes of `digest` as 32 lower-case hex digits.
fn hex128(digest: &[u8]) -> String {
    digest.iter().take(16).fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// What a recorded key answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// The same request: its result.
    Same(Vec<EventId>),
    /// Another request under the same key.
    Reused,
}

/// One session's recorded keys, for the memory engine (the Redis engine keeps the same in
/// its hash and list): name → request digest and result, oldest evicted past
/// [`MAX_KEYS_PER_SESSION`].
#[derive(Debug, Default)]
pub struct Records {
    results: HashMap<String, (String, Vec<EventId>)>,
    order: VecDeque<String>,
    bytes: usize,
}

impl Records {
    /// What `key` recorded, compared with the request's `digest`; `None` if nothing.
    pub fn lookup(&self, key: &IdempotencyKey, digest: &str) -> Option<Recorded> {
        let (recorded, ids) = self.results.get(key.field())?;
        Some(if recorded == digest {
            Recorded::Same(ids.clone())
        } else {
            Recorded::Reused
        })
    }

    /// Records `ids` as the result of the request `digest` under `key`, evicting the oldest
    /// key past the bound.
    pub fn record(&mut self, key: &IdempotencyKey, digest: String, ids: Vec<EventId>) {
        self.bytes += Self::bytes_of(&ids);
        self.order.push_back(key.field.clone());
        self.results.insert(key.field.clone(), (digest, ids));
        while self.order.len() > MAX_KEYS_PER_SESSION {
            if let Some((_, ids)) = self
                .order
                .pop_front()
                .and_then(|old| self.results.remove(&old))
            {
                self.bytes -= Self::bytes_of(&ids);
            }
        }
    }

    /// Estimated bytes the records hold.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes one record holds: its name twice (map and order), its digest, its ids, and
    /// the structures around them.
    fn bytes_of(ids: &[EventId]) -> usize {
        3 * 32
            + std::mem::size_of::<(String, (String, Vec<EventId>))>()
            + std::mem::size_of_val(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii_and_bounded() {
        assert!(IdempotencyKey::new(b"8e03978e-40d5-43e8-bc93-6894a57f9324").is_ok());
        assert!(IdempotencyKey::new(&[b'k'; MAX_KEY_LEN]).is_ok());
        assert_eq!(
            IdempotencyKey::new(&[b'k'; MAX_KEY_LEN + 1]),
            Err("must be 1 to 128 characters")
        );
        assert_eq!(IdempotencyKey::new(b""), Err("must be 1 to 128 characters"));
        for bad in [&b"a b"[..], b"a\tb", "é".as_bytes(), b"a\x7f"] {
            assert!(IdempotencyKey::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_field_is_a_hash_not_the_key() {
        let key = IdempotencyKey::new(b"secret-looking-key").unwrap();
        assert_eq!(key.field().len(), 32);
        assert!(key.field().bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(!key.field().contains("secret"));
        assert_ne!(key, IdempotencyKey::new(b"secret-looking-kez").unwrap());
    }

    #[test]
    fn digests_tell_requests_apart() {
        let ev = |kind: &str, data: &str| NewEvent {
            kind: kind.to_owned(),
            data: data.to_owned(),
        };
        let one = append_digest(&[ev("a", "1")]);
        assert_eq!(one, append_digest(&[ev("a", "1")]));
        assert_ne!(one, append_digest(&[ev("a", "2")]));
        assert_ne!(one, append_digest(&[ev("a", "1"), ev("a", "1")]));
        // Framing: moving a byte from kind to data is another request.
        assert_ne!(
            append_digest(&[ev("ab", "1")]),
            append_digest(&[ev("a", "b1")])
        );
        let done = |status: &str| Completion {
            status: status.to_owned(),
            final_response: "null".to_owned(),
        };
        assert_ne!(
            complete_digest(&done("succeeded")),
            complete_digest(&done("failed"))
        );
    }

    #[test]
    fn records_replay_refuse_and_evict_the_oldest() {
        let key = |n: usize| IdempotencyKey::new(format!("k{n}").as_bytes()).unwrap();
        let id = |ms| EventId { ms, seq: 0 };
        let mut records = Records::default();
        records.record(&key(0), "d0".into(), vec![id(1), id(2)]);
        assert!(records.bytes() > 0);
        assert_eq!(
            records.lookup(&key(0), "d0"),
            Some(Recorded::Same(vec![id(1), id(2)]))
        );
        assert_eq!(records.lookup(&key(0), "other"), Some(Recorded::Reused));
        assert_eq!(records.lookup(&key(1), "d0"), None);
        for n in 1..=MAX_KEYS_PER_SESSION {
            records.record(&key(n), format!("d{n}"), vec![id(n as u64)]);
        }
        assert_eq!(records.lookup(&key(0), "d0"), None, "the oldest went");
        assert_eq!(
            records.lookup(&key(1), "d1"),
            Some(Recorded::Same(vec![id(1)]))
        );
        assert_eq!(records.results.len(), MAX_KEYS_PER_SESSION);
        let one = records.bytes() / MAX_KEYS_PER_SESSION;
        assert_eq!(
            records.bytes(),
            one * MAX_KEYS_PER_SESSION,
            "evictions freed bytes"
        );
    }
}
