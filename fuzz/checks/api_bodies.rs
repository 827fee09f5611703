//! The JSON bodies of `POST /v2/sessions` (init), `POST /v2/sessions/{id}/events` and
//! `POST /v2/sessions/{id}/complete`, sent to the real handlers through the API.
//!
//! Input: byte 0 picks the endpoint (`% 3`: init, events, complete), byte 1 the
//! `Content-Type` (`% 4`: none, `application/json`, `application/x+json; charset=utf-8`,
//! `text/plain`), the rest is the body. Events and complete go to a fresh session.
//!
//! Properties: no panic and no 5xx; a refusal is `400`, `413` or `415` (a non-JSON content
//! type always `415`) with a JSON error whose message names the field (`field: reason`)
//! and leaves the session exactly as it was; an accepted call stores exactly what the
//! body said: init the `metadata`, events every event's `kind` and `data` in order with
//! increasing ids (the ids it answered), complete the `status` (default `succeeded`) and
//! `final_response` plus one `complete` event.

use agentgate::store::{EventId, RUNNING};
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::Full;
use serde_json::Value;

use super::gateway::{API_KEY, Gateway, assert_json_error};

const CONTENT_TYPES: [Option<&str>; 4] = [
    None,
    Some("application/json"),
    Some("application/x+json; charset=utf-8"),
    Some("text/plain"),
];

/// Checks one input (see the module docs).
pub fn check(input: &[u8]) {
    let [endpoint, content_type, body @ ..] = input else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(*content_type) % 4];
    let gateway = Gateway::get();
    let session = (endpoint % 3 != 0).then(|| gateway.create_session());
    let path = match (endpoint % 3, &session) {
        (1, Some(s)) => format!("/v2/sessions/{}/events", s.id),
        (2, Some(s)) => format!("/v2/sessions/{}/complete", s.id),
        _ => "/v2/sessions".to_owned(),
    };
    let before = session.as_ref().map(|s| {
        (
            gateway.state(&s.id).expect("a fresh session exists"),
            gateway.events(&s.id),
        )
    });

    let mut req = Request::post(&path).header(header::AUTHORIZATION, format!("Bearer {API_KEY}"));
    if let Some(content_type) = content_type {
        req = req.header(header::CONTENT_TYPE, content_type);
    }
    let req = req
        .body(Full::new(Bytes::copy_from_slice(body)))
        .expect("a valid request");
    let answer = gateway.send(req);
    assert!(
        !answer.status.is_server_error(),
        "{path}: server error for {:?}: {answer:?}",
        String::from_utf8_lossy(body)
    );

    if !answer.status.is_success() {
        assert!(
            [
                StatusCode::BAD_REQUEST,
                StatusCode::PAYLOAD_TOO_LARGE,
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            ]
            .contains(&answer.status),
            "{path}: {answer:?}"
        );
        let message = assert_json_error(&answer);
        assert!(message.contains(": "), "message names no field: {message}");
        if let (Some(session), Some(before)) = (&session, before) {
            let after = (
                gateway.state(&session.id).expect("still exists"),
                gateway.events(&session.id),
            );
            assert_eq!(after, before, "{path}: a refused call changed the session");
        }
        return;
    }
    assert_ne!(
        content_type,
        Some("text/plain"),
        "{path}: accepted text/plain"
    );

    // Accepted: the body was a JSON object (or empty where that is allowed).
    let sent: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Default::default())
    } else {
        serde_json::from_slice(body).expect("an accepted body is JSON")
    };
    let reply: Value = serde_json::from_slice(&answer.body).expect("a JSON answer");
    match (&session, before) {
        (None, _) => {
            assert_eq!(answer.status, StatusCode::CREATED);
            let id = reply["id"].as_str().expect("init answers an id");
            let state = gateway
                .state(&id.parse().expect("a valid id"))
                .expect("the new session exists");
            assert_eq!(state.status, RUNNING);
            assert_eq!(json(&state.metadata), sent["metadata"], "metadata");
        }
        (Some(session), Some((before_state, before_events))) if path.ends_with("/events") => {
            assert_eq!(answer.status, StatusCode::OK);
            let sent_events: Vec<Value> = match sent.get("events") {
                Some(Value::Array(events)) => events.clone(),
                _ => vec![sent.clone()],
            };
            let ids: Vec<EventId> = reply["ids"]
                .as_array()
                .expect("events answers ids")
                .iter()
                .map(|id| id.as_str().expect("a string id").parse().expect("an id"))
                .collect();
            assert_eq!(ids.len(), sent_events.len(), "one id per event");
            let events = gateway.events(&session.id);
            let new = &events[before_events.len()..];
            assert_eq!(new.len(), sent_events.len(), "every event stored");
            for ((stored, sent), id) in new.iter().zip(&sent_events).zip(&ids) {
                assert_eq!(stored.id, *id);
                assert_eq!(Some(stored.kind.as_str()), sent["kind"].as_str());
                assert_eq!(json(&stored.data), sent["data"]);
            }
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase");
            let state = gateway.state(&session.id).expect("exists");
            assert_eq!(
                state.event_count,
                before_state.event_count + ids.len() as u64
            );
        }
        (Some(session), Some((before_state, _))) => {
            assert_eq!(answer.status, StatusCode::OK);
            let state = gateway.state(&session.id).expect("exists");
            let status = sent["status"].as_str().unwrap_or("succeeded");
            assert_eq!(state.status, status);
            assert_eq!(reply["status"], status);
            let final_response = state.final_response.expect("a final response");
            assert_eq!(json(&final_response), sent["final_response"]);
            assert_eq!(state.event_count, before_state.event_count + 1);
        }
        (Some(_), None) => unreachable!("a session has a before"),
    }
}

/// Stored compact JSON text, parsed.
fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("stored JSON")
}
