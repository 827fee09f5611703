//! The `Last-Event-ID` of `GET /v2/sessions/{id}/stream`: the header, or `?last_event_id=`
//! when there is none, read as an [`EventId`] (`<ms>-<seq>`).
//!
//! Input, as lines: the header's value (absent when the line is empty); the query string.
//!
//! Properties: no panic; [`EventId`] accepts exactly `1-20 digits '-' 1-20 digits` whose
//! numbers fit in `u64`, and what it accepts prints in a form it reads back the same; and
//! the real stream handler (a `HEAD` with a valid token on a live session) answers `200`
//! when the effective value is empty or such an id, else `400` with a JSON error naming
//! `last_event_id`.

use agentgate::api::query_param;
use agentgate::store::EventId;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;

use super::gateway::{Gateway, assert_json_error};

/// Whether `text` is an event id by the documented grammar (an independent statement of it).
fn is_event_id(text: &str) -> bool {
    let Some((ms, seq)) = text.split_once('-') else {
        return false;
    };
    let number = |part: &str| {
        (1..=20).contains(&part.len())
            && part.bytes().all(|b| b.is_ascii_digit())
            && part
                .parse::<u128>()
                .is_ok_and(|n| n <= u128::from(u64::MAX))
    };
    number(ms) && number(seq)
}

/// Checks one input (see the module docs).
pub fn check(input: &[u8]) {
    let mut lines = input.split(|&b| b == b'\n');
    let header = lines.next().unwrap_or_default();
    let query = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();

    let text = String::from_utf8_lossy(header);
    match text.parse::<EventId>() {
        Ok(id) => {
            assert!(is_event_id(&text), "accepted {text:?}");
            let printed = id.to_string();
            assert_eq!(printed.parse::<EventId>(), Ok(id));
            // Printed without leading zeros, whatever the zeros of the input.
            let (ms, seq) = text.split_once('-').unwrap_or_default();
            let numbers = (ms.parse::<u64>(), seq.parse::<u64>());
            let (Ok(ms), Ok(seq)) = numbers else {
                panic!("accepted {text:?} whose parts are not u64");
            };
            assert_eq!(printed, format!("{ms}-{seq}"));
        }
        Err(error) => {
            assert!(!is_event_id(&text), "refused {text:?}");
            assert!(!error.to_string().is_empty());
        }
    }

    // Through the handler: only a request a client can send.
    let gateway = Gateway::get();
    let session = gateway.create_session();
    let target = format!(
        "/v2/sessions/{}/stream?token={}&{query}",
        session.id, session.token
    );
    let mut builder = Request::builder().method(Method::HEAD).uri(target);
    if !header.is_empty() {
        builder = builder.header("last-event-id", header);
    }
    let Ok(req) = builder.body(Full::new(Bytes::new())) else {
        return;
    };
    let effective = if header.is_empty() {
        query_param(req.uri().query(), "last_event_id").unwrap_or_default()
    } else {
        // The handler reads a non-UTF-8 header as text that is no id.
        std::str::from_utf8(header).unwrap_or("\u{fffd}").to_owned()
    };
    let answer = gateway.send(req);
    if effective.is_empty() || is_event_id(&effective) {
        assert_eq!(answer.status, StatusCode::OK, "{effective:?}: {answer:?}");
    } else {
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{effective:?}: {answer:?}"
        );
        let message = assert_json_error(&answer);
        assert!(message.starts_with("last_event_id: "), "{message}");
    }
}
