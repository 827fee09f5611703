//! The `Idempotency-Key` request header of append and complete: exactly-once writes for
//! agents that retry.
//!
//! An agent whose call timed out (or whose connection dropped before the answer came)
//! cannot tell whether the write was applied. Sent with `Idempotency-Key: <key>`, the call
//! can be repeated with the same key and body: the store checks and records the key in the
//! same atomic round trip as the write ([`crate::store::idempotency`]), so the retry gets
//! the original answer (same status, same ids) with `Idempotent-Replayed: true`, and
//! nothing is written twice. This holds after a `503 replicas_unconfirmed` too: the retry
//! does not write again, and answers `200` once the replicas confirm.
//!
//! - The key: 1 to 128 visible ASCII characters (`!` to `~`); a UUID per logical call is
//!   the usual choice. Anything else answers `400 invalid_field` naming
//!   `Idempotency-Key`; so does sending the header twice.
//! - Scope: the session. The same key on another session is another key.
//! - The same key with another body, or on the other endpoint: `422
//!   idempotency_key_reused`, nothing written. Bodies are compared as what the store would
//!   write (each event's kind and compact JSON data; complete's status and final
//!   response), so spacing, and a single event sent bare or as a batch of one, do not
//!   count as differences.
//! - A retry after the session completed still gets the original answer (a retried
//!   `complete` its `event_id`; a retried append its `ids`).
//! - Only successes are recorded: a call refused (`404`, `409`, `413`, ...) wrote nothing,
//!   and its retry is evaluated afresh.
//! - Bound: a session remembers its newest 128 keys
//!   ([`MAX_KEYS_PER_SESSION`](crate::store::idempotency::MAX_KEYS_PER_SESSION)), for as
//!   long as the session lives; older ones are forgotten.
//!
//! The key is never logged nor used in a Redis key name: the store keeps a hash of it.

use http::{HeaderMap, HeaderName, HeaderValue, Response};

use super::ApiError;
use super::body::Body;
use crate::store::IdempotencyKey;

/// The request header.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The response header marking a replayed answer (`true`).
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The request's idempotency key, if it sent one; `400` naming the header if it is invalid.
pub fn key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::invalid("Idempotency-Key", "must be sent once"));
    }
    IdempotencyKey::new(value.as_bytes())
        .map(Some)
        .map_err(|reason| ApiError::invalid("Idempotency-Key", reason))
}

/// Marks `response` as the replay of an earlier call's answer, when it is one.
pub fn mark(mut response: Response<Body>, replayed: bool) -> Response<Body> {
    if replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::idempotency::MAX_KEY_LEN;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(IDEMPOTENCY_KEY, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn keys_are_optional_single_and_valid() {
        assert_eq!(key(&HeaderMap::new()), Ok(None));
        assert!(key(&headers(&[b"abc-123"])).unwrap().is_some());
        let cases: [(&[&[u8]], &str); 4] = [
            (&[b"a", b"b"], "Idempotency-Key: must be sent once"),
            (&[b""], "Idempotency-Key: must be 1 to 128"),
            (&[b"a b"], "Idempotency-Key: may contain only visible ASCII"),
            (
                &[b"caf\xc3\xa9"],
                "Idempotency-Key: may contain only visible ASCII",
            ),
        ];
        for (values, expected) in cases {
            let err = key(&headers(values)).unwrap_err();
            assert_eq!(err.status, 400);
            assert_eq!(err.code, "invalid_field");
            assert!(err.message.starts_with(expected), "{}", err.message);
        }
        let long = vec![b'k'; MAX_KEY_LEN + 1];
        assert!(key(&headers(&[&long])).is_err());
    }
}
