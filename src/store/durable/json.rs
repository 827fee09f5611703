//! JSON mode (`Content-Type: application/json`): message framing.
//!
//! An append's body is one JSON value; an array appends each of its elements as its own
//! message (flattened one level). The store keeps an append as the elements' JSON text
//! joined by commas, so a read is `[` + the stored pieces joined by commas + `]`, and one
//! SSE `data` event is one append's elements as an array. Values are validated and kept as
//! sent, byte for byte; validating them does not recurse (serde_json skips a raw value with
//! a heap stack of its own), so no nesting depth reaches the thread's stack, and the body
//! bound (`max_append_bytes`) bounds the work.

use bytes::Bytes;
use serde_json::value::RawValue;

/// Why a JSON-mode body is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonBodyError {
    /// Not one JSON value.
    #[error("body: not valid JSON: {0}")]
    Invalid(String),
    /// `[]` appends nothing (allowed only as a `PUT`'s initial body).
    #[error("body: an empty JSON array appends nothing")]
    EmptyArray,
}

/// Whether `content_type` puts a stream in JSON mode.
pub fn is_json(content_type: &str) -> bool {
    essence(content_type) == "application/json"
}

/// The media type without parameters, lower-case.
pub fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The stored form of a JSON-mode body: `None` for an empty array when `create` (a `PUT`
/// may create an empty stream that way).
pub fn frame(body: &[u8], create: bool) -> Result<Option<Bytes>, JsonBodyError> {
    let text = std::str::from_utf8(body).map_err(|e| JsonBodyError::Invalid(e.to_string()))?;
    let value: &RawValue =
        serde_json::from_str(text).map_err(|e| JsonBodyError::Invalid(e.to_string()))?;
    let raw = value.get();
    if raw.starts_with('[') {
        let items: Vec<&RawValue> =
            serde_json::from_str(raw).map_err(|e| JsonBodyError::Invalid(e.to_string()))?;
        if items.is_empty() {
            return if create {
                Ok(None)
            } else {
                Err(JsonBodyError::EmptyArray)
            };
        }
        let mut out = String::with_capacity(raw.len());
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(item.get());
        }
        return Ok(Some(Bytes::from(out)));
    }
    Ok(Some(Bytes::copy_from_slice(raw.as_bytes())))
}

/// A JSON array of the stored pieces `messages`.
pub fn array<'a>(messages: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::from(&b"["[..]);
    for (i, message) in messages.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(message);
    }
    out.push(b']');
    out
}

/// The first `n` values of a stored piece, stored the same way; `None` when it holds fewer.
pub fn first_values(stored: &[u8], n: u64) -> Option<Bytes> {
    let text = std::str::from_utf8(stored).ok()?;
    let array = format!("[{text}]");
    let items: Vec<&RawValue> = serde_json::from_str(&array).ok()?;
    let n = usize::try_from(n).ok()?;
    if items.len() < n {
        return None;
    }
    let joined: Vec<&str> = items[..n].iter().map(|v| v.get()).collect();
    Some(Bytes::from(joined.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_flatten_one_level_and_values_stay_as_sent() {
        let framed = frame(br#" [ {"b":1,"a":2}, [3] ] "#, false)
            .unwrap()
            .unwrap();
        assert_eq!(&framed[..], br#"{"b":1,"a":2},[3]"#);
        assert_eq!(&frame(b"7", false).unwrap().unwrap()[..], b"7");
        assert_eq!(array([&framed[..], &b"7"[..]]), br#"[{"b":1,"a":2},[3],7]"#);
        assert_eq!(array(std::iter::empty()), b"[]");
    }

    #[test]
    fn a_prefix_of_values_is_stored_alike() {
        assert_eq!(
            first_values(br#"{"a":1},[2],3"#, 2).unwrap(),
            &br#"{"a":1},[2]"#[..]
        );
        assert_eq!(first_values(b"1,2", 2).unwrap(), &b"1,2"[..]);
        assert_eq!(first_values(b"1,2", 3), None);
    }

    #[test]
    fn empty_arrays_and_invalid_json_are_refused() {
        assert_eq!(frame(b"[]", false), Err(JsonBodyError::EmptyArray));
        assert_eq!(frame(b" [ ] ", true), Ok(None));
        assert!(matches!(frame(b"{", false), Err(JsonBodyError::Invalid(_))));
        assert!(matches!(
            frame(b"1 2", false),
            Err(JsonBodyError::Invalid(_))
        ));
        // Half a million levels (a 1 MiB body): validated without recursion.
        let deep = "[".repeat(500_000) + &"]".repeat(500_000);
        assert!(frame(deep.as_bytes(), false).is_ok());
        let unbalanced = "[".repeat(500_000);
        assert!(matches!(
            frame(unbalanced.as_bytes(), false),
            Err(JsonBodyError::Invalid(_))
        ));
    }
}
