//! `GET /v2/stream?sessions=a,b&tokens=ta,tb` and its resume cursor: the query is split by
//! the gateway's `QueryDemux` ([`demux`]), then a `Last-Event-ID` is read as a
//! [`Cursor`] for the streams it names (middleware `sse::multiplex`).
//!
//! Input, as lines: the query string; a `Last-Event-ID`; then event ids that the streams
//! deliver in turn (line `k` to stream `k % streams`).
//!
//! Properties: no panic; a split names 1..n valid, distinct streams, each read from its own
//! `/v2/sessions/{name}/stream` with its own token, and a refusal names `sessions` or
//! `tokens`; a cursor that parses re-encodes to a valid header value that parses to the
//! same positions; a cursor advanced by any ids the parser can deliver (up to
//! [`MAX_ID`] bytes) round-trips too, an empty id reading back as "no position" (as an
//! SSE `id:` with no value resets the last event id).

use agentgate::api::stream::demux;
use agentgate_middleware::sse::multiplex::cursor::MAX_ID;
use agentgate_middleware::sse::multiplex::{Cursor, Demux};
use http::{HeaderValue, Request};

/// Checks one input (see the module docs).
pub fn check(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    let mut lines = text.split('\n');
    let query = lines.next().unwrap_or_default();
    let last_event_id = lines.next().unwrap_or_default();
    let Ok(req) = Request::get(format!("/v2/stream?{query}")).body(()) else {
        return; // not a request target a client can send
    };
    let parts = match demux().split(&req) {
        None => panic!("the multiplex path was not recognised: {query:?}"),
        Some(Err(error)) => {
            assert!(
                ["sessions", "tokens"].contains(&error.field.as_str()),
                "refusal names {:?}",
                error.field
            );
            assert!(!error.message.is_empty());
            return;
        }
        Some(Ok(parts)) => parts,
    };
    assert!(!parts.is_empty(), "no streams");
    let names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
    for (i, part) in parts.iter().enumerate() {
        assert!(
            !part.name.is_empty()
                && part.name.len() <= 128
                && part
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "invalid name {:?}",
            part.name
        );
        assert!(!names[..i].contains(&part.name.as_str()), "duplicate name");
        assert_eq!(
            part.uri.path(),
            format!("/v2/sessions/{}/stream", part.name)
        );
        if let Some(query) = part.uri.query() {
            assert!(query.starts_with("token=") && !query[6..].contains(['&', '=', ',']));
        }
    }

    match Cursor::parse(last_event_id, &names) {
        Ok(cursor) => {
            let encoded = cursor.encode();
            assert!(HeaderValue::from_str(&encoded).is_ok(), "{encoded:?}");
            assert_eq!(Cursor::parse(&encoded, &names), Ok(cursor.clone()));
            for i in 0..names.len() {
                if let Some(id) = cursor.position(i) {
                    assert!(!id.is_empty() && id.len() <= MAX_ID, "position {i}: {id:?}");
                }
            }
        }
        Err(error) => assert!(!error.to_string().is_empty()),
    }

    let mut cursor = Cursor::start(&names);
    let mut expected: Vec<Option<&str>> = vec![None; names.len()];
    // The SSE parser delivers ids without NUL, CR or LF; the gateway's own are short.
    let ids = lines.filter(|id| id.len() <= MAX_ID && !id.contains(['\0', '\r']));
    for (k, id) in ids.enumerate() {
        let i = k % names.len();
        cursor.advance(i, id);
        expected[i] = Some(id).filter(|id| !id.is_empty());
        let encoded = cursor.encode();
        assert!(HeaderValue::from_str(&encoded).is_ok(), "{encoded:?}");
        let back = Cursor::parse(&encoded, &names)
            .unwrap_or_else(|e| panic!("own cursor {encoded:?} refused: {e}"));
        let positions: Vec<Option<&str>> = (0..names.len()).map(|i| back.position(i)).collect();
        assert_eq!(positions, expected, "cursor {encoded:?}");
    }
}
