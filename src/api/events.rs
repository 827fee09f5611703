//! `POST /v2/sessions/{id}/events`: append one event or a batch, in one store round trip.
//!
//! Body: `{"kind": "delta", "data": {...}}` or `{"events": [{"kind":..,"data":..}, ...]}`.
//! Answer `200`: `{"ids": ["<event id>", ...]}`. A batch is all-or-nothing: one invalid event
//! rejects the whole call (400 naming `events[i].field`) and nothing is written. With an
//! `Idempotency-Key` header a retry writes nothing and gets the same ids
//! ([`super::idempotency`]).

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use super::body::{Body, json, read_json};
use super::{ApiError, ApiState, idempotency};
use crate::store::{COMPLETE_KIND, NewEvent, SessionId};

/// Most events accepted in one call.
pub const MAX_BATCH: usize = 1000;

/// Longest event kind.
const MAX_KIND_LEN: usize = 64;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventBody {
    kind: String,
    #[serde(default)]
    data: Value,
}

/// Checks an event kind: 1-64 characters of `[A-Za-z0-9_.:-]`, not the reserved `complete`
/// (appended by complete) or `gap` (the gateway's own notice of trimmed events,
/// [`super::stream::GAP_KIND`]).
pub fn validate_kind(kind: &str) -> Result<(), &'static str> {
    if kind.is_empty() || kind.len() > MAX_KIND_LEN {
        return Err("must be 1 to 64 characters");
    }
    if !kind
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
    {
        return Err("may contain only A-Z, a-z, 0-9, '_', '.', ':' and '-'");
    }
    if kind == COMPLETE_KIND {
        return Err("'complete' is reserved: call POST /v2/sessions/{id}/complete");
    }
    if kind == super::stream::GAP_KIND {
        return Err("'gap' is reserved: the gateway sends it when trimmed events were missed");
    }
    Ok(())
}

/// Turns the request JSON into validated events.
fn parse_events(body: Value) -> Result<Vec<NewEvent>, ApiError> {
    let (items, batch): (Vec<Value>, bool) = match body {
        Value::Object(mut map) if map.contains_key("events") => {
            if map.len() > 1 {
                let extra = map
                    .keys()
                    .find(|k| *k != "events")
                    .cloned()
                    .unwrap_or_default();
                return Err(ApiError::invalid(&extra, "unknown field next to `events`"));
            }
            match map.remove("events") {
                Some(Value::Array(items)) => (items, true),
                _ => return Err(ApiError::invalid("events", "must be an array")),
            }
        }
        one @ Value::Object(_) => (vec![one], false),
        _ => return Err(ApiError::invalid_body("must be a JSON object")),
    };
    if items.is_empty() {
        return Err(ApiError::invalid("events", "must hold at least one event"));
    }
    if items.len() > MAX_BATCH {
        return Err(ApiError::invalid(
            "events",
            format!("at most {MAX_BATCH} events per call"),
        ));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            // Name fields as the caller wrote them: `events[i].kind` in a batch, `kind` alone.
            let (item_path, kind_path) = if batch {
                (format!("events[{i}]"), format!("events[{i}].kind"))
            } else {
                ("body".to_owned(), "kind".to_owned())
            };
            let event: EventBody =
                serde_json::from_value(item).map_err(|e| ApiError::invalid(&item_path, e))?;
            validate_kind(&event.kind).map_err(|e| ApiError::invalid(&kind_path, e))?;
            Ok(NewEvent {
                kind: event.kind,
                data: event.data.to_string(),
            })
        })
        .collect()
}

/// Handles append.
pub async fn handle<B>(
    state: &Arc<ApiState>,
    id: &SessionId,
    req: Request<B>,
) -> Result<Response<Body>, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let owner = state.owner(req.headers(), req.extensions())?;
    let key = idempotency::key(req.headers())?;
    let (parts, body) = req.into_parts();
    let body: Value = read_json(&parts.headers, body, state.settings.max_body_bytes, false).await?;
    let events = parse_events(body)?;
    let applied = state
        .store
        .append_idempotent(id, &owner, &events, key.as_ref())
        .await?;
    let ids: Vec<String> = applied.value.iter().map(ToString::to_string).collect();
    let response = json(StatusCode::OK, &serde_json::json!({ "ids": ids }));
    Ok(idempotency::mark(response, applied.replayed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn single_and_batch_parse() {
        let one = parse_events(json!({"kind": "delta", "data": {"t": "a\nb"}})).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].data, r#"{"t":"a\nb"}"#);
        let many =
            parse_events(json!({"events": [{"kind": "a"}, {"kind": "b", "data": 1}]})).unwrap();
        assert_eq!(many[0].data, "null");
        assert_eq!(many[1].kind, "b");
    }

    #[test]
    fn bad_events_name_the_field() {
        let cases = [
            (
                json!({"events": []}),
                "events: must hold at least one event",
            ),
            (json!({"events": {}}), "events: must be an array"),
            (
                json!({"events": [{"kind": "a"}, {"kind": "a b"}]}),
                "events[1].kind: may contain",
            ),
            (
                json!({"events": [{"data": 1}]}),
                "events[0]: missing field `kind`",
            ),
            (json!({"kind": "complete"}), "kind: 'complete' is reserved"),
            (json!({"kind": "gap"}), "kind: 'gap' is reserved"),
            (json!({"kind": ""}), "kind: must be 1 to 64"),
            (
                json!({"kind": "a", "extra": 1}),
                "body: unknown field `extra`",
            ),
            (json!([1]), "body: must be a JSON object"),
        ];
        for (input, expected) in cases {
            let err = parse_events(input.clone()).unwrap_err();
            assert!(
                err.message.starts_with(expected),
                "{input} gave {:?}, expected {expected:?}",
                err.message
            );
        }
        let too_many: Vec<_> = (0..=MAX_BATCH).map(|_| json!({"kind": "a"})).collect();
        let err = parse_events(json!({ "events": too_many })).unwrap_err();
        assert!(err.message.starts_with("events: at most"));
    }
}
