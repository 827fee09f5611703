//! Rejected requests: the right status, a stable code, a message naming the field, and
//! nothing written to Redis.

use std::time::Duration;

use agentgate::auth::StreamTokens;
use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};

use crate::client::Call;
use crate::gateway::{Gateway, KEY, SECRET, blocking, redis_config};
use crate::support::redis_server::RedisServer;

/// Body limit of the gateway under test: low, yet above a 1001-event batch (about 13 KB),
/// so "too many events" and "too many bytes" are told apart.
const MAX_BODY: u64 = 16_384;

/// Everything Redis holds: every key with its content ([`RedisServer::dump`]).
fn redis_state(redis: &RedisServer) -> Vec<(String, String)> {
    blocking(|| redis.dump())
}

struct Row {
    name: &'static str,
    call: Call,
    status: u16,
    code: &'static str,
    message: String,
    /// Expected `Allow` header (405).
    allow: Option<&'static str>,
}

fn row(name: &'static str, call: Call, status: u16, code: &'static str, message: &str) -> Row {
    Row {
        name,
        call,
        status,
        code,
        message: message.to_owned(),
        allow: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_rejected_and_writes_nothing() {
    let redis = blocking(RedisServer::start);
    let mut config = redis_config(&redis);
    config.server.max_body_bytes = MAX_BODY;
    let gateway = Gateway::start(&config).await;
    let session = gateway.init().await;
    let c = &gateway.client;
    let events = session.path("events");
    let complete = session.path("complete");
    let append = |body: Value| c.post(&events).bearer(KEY).json(&body);
    let append_raw = |text: &str| c.post(&events).bearer(KEY).raw_json(text);
    let stream_with = |header: Option<&str>, query: &str| {
        let call = c.get(&format!("{}{query}", session.stream_path()));
        match header {
            Some(h) => call.header("last-event-id", h),
            None => call,
        }
    };
    let unknown = "no-such-session_0123";
    let unknown_token = StreamTokens::new(SECRET.as_bytes(), Duration::from_secs(60))
        .issue(&unknown.parse().unwrap())
        .0;
    let oversized = format!(
        r#"{{"kind":"delta","data":"{}"}}"#,
        "x".repeat(MAX_BODY as usize)
    );
    let too_many: Vec<Value> = (0..1001).map(|_| json!({"kind": "a"})).collect();
    let long_id = "a".repeat(65);
    let long_kind = "k".repeat(65);

    let mut rows = vec![
        // init
        row(
            "init: invalid JSON",
            c.post("/v2/sessions")
                .bearer(KEY)
                .raw_json(r#"{"metadata":"#),
            400,
            "invalid_body",
            "body: ",
        ),
        row(
            "init: unknown field",
            c.post("/v2/sessions").bearer(KEY).json(&json!({"meta": 1})),
            400,
            "invalid_body",
            "body: unknown field `meta`",
        ),
        row(
            "init: not JSON content type",
            c.post("/v2/sessions")
                .bearer(KEY)
                .header("content-type", "text/plain")
                .body("{}"),
            415,
            "unsupported_media_type",
            "content-type: must be application/json",
        ),
        row(
            "init: body over the limit",
            c.post("/v2/sessions").bearer(KEY).raw_json(format!(
                r#"{{"metadata":"{}"}}"#,
                "m".repeat(MAX_BODY as usize)
            )),
            413,
            "body_too_large",
            &format!("body: larger than the limit of {MAX_BODY} bytes"),
        ),
        // append: body shape
        row(
            "append: invalid JSON",
            append_raw(r#"{"kind":"#),
            400,
            "invalid_body",
            "body: ",
        ),
        row(
            "append: empty body",
            append_raw(""),
            400,
            "invalid_body",
            "body: required",
        ),
        row(
            "append: not an object",
            append(json!([{"kind": "a"}])),
            400,
            "invalid_body",
            "body: must be a JSON object",
        ),
        row(
            "append: kind of the wrong type",
            append(json!({"kind": 5})),
            400,
            "invalid_field",
            "body: invalid type",
        ),
        row(
            "append: unknown field",
            append(json!({"kind": "delta", "data": 1, "extra": true})),
            400,
            "invalid_field",
            "body: unknown field `extra`",
        ),
        row(
            "append: events not an array",
            append(json!({"events": {}})),
            400,
            "invalid_field",
            "events: must be an array",
        ),
        row(
            "append: field next to events",
            append(json!({"events": [{"kind": "a"}], "kind": "b"})),
            400,
            "invalid_field",
            "kind: unknown field next to `events`",
        ),
        row(
            "append: batch item of the wrong type",
            append(json!({"events": [{"kind": "a"}, {"kind": 7}]})),
            400,
            "invalid_field",
            "events[1]: invalid type",
        ),
        row(
            "append: batch item with an unknown field",
            append(json!({"events": [{"kind": "a", "bogus": 1}]})),
            400,
            "invalid_field",
            "events[0]: unknown field `bogus`",
        ),
        row(
            "append: batch item without kind",
            append(json!({"events": [{"kind": "a"}, {"data": 1}]})),
            400,
            "invalid_field",
            "events[1]: missing field `kind`",
        ),
        row(
            "append: empty batch",
            append(json!({"events": []})),
            400,
            "invalid_field",
            "events: must hold at least one event",
        ),
        row(
            "append: 1001 events",
            append(json!({ "events": too_many })),
            400,
            "invalid_field",
            "events: at most 1000 events per call",
        ),
        // append: kinds
        row(
            "append: kind with a space",
            append(json!({"kind": "has space"})),
            400,
            "invalid_field",
            "kind: may contain only",
        ),
        row(
            "append: kind with a brace",
            append(json!({"kind": "a{b}"})),
            400,
            "invalid_field",
            "kind: may contain only",
        ),
        row(
            "append: empty kind",
            append(json!({"kind": ""})),
            400,
            "invalid_field",
            "kind: must be 1 to 64 characters",
        ),
        row(
            "append: kind of 65 characters",
            append(json!({ "kind": long_kind })),
            400,
            "invalid_field",
            "kind: must be 1 to 64 characters",
        ),
        row(
            "append: reserved kind",
            append(json!({"kind": "complete"})),
            400,
            "invalid_field",
            "kind: 'complete' is reserved",
        ),
        row(
            "append: bad kind after a good one (all or nothing)",
            append(json!({"events": [{"kind": "ok"}, {"kind": "bad kind"}]})),
            400,
            "invalid_field",
            "events[1].kind: may contain only",
        ),
        row(
            "append: reserved kind in a batch",
            append(json!({"events": [{"kind": "ok"}, {"kind": "ok"}, {"kind": "complete"}]})),
            400,
            "invalid_field",
            "events[2].kind: 'complete' is reserved",
        ),
        // append: size and media type
        row(
            "append: body over the limit (declared length)",
            append_raw(&oversized),
            413,
            "body_too_large",
            &format!("body: larger than the limit of {MAX_BODY} bytes"),
        ),
        row(
            "append: body over the limit (chunked, no length)",
            c.post(&events).bearer(KEY).chunked_json(
                oversized
                    .as_bytes()
                    .chunks(1000)
                    .map(Bytes::copy_from_slice)
                    .collect(),
            ),
            413,
            "body_too_large",
            &format!("body: larger than the limit of {MAX_BODY} bytes"),
        ),
        row(
            "append: text/plain",
            c.post(&events)
                .bearer(KEY)
                .header("content-type", "text/plain")
                .body(r#"{"kind":"a"}"#),
            415,
            "unsupported_media_type",
            "content-type: must be application/json",
        ),
        // session ids in the path
        row(
            "append: id of 65 characters",
            c.post(&format!("/v2/sessions/{long_id}/events"))
                .bearer(KEY)
                .json(&json!({"kind": "a"})),
            400,
            "invalid_field",
            "id: must be at most 64 characters",
        ),
        row(
            "append: id with a dot",
            c.post("/v2/sessions/a.b/events")
                .bearer(KEY)
                .json(&json!({"kind": "a"})),
            400,
            "invalid_field",
            "id: may contain only",
        ),
        row(
            "append: id with a hash-tag brace",
            c.post("/v2/sessions/a%7Bb%7D/events")
                .bearer(KEY)
                .json(&json!({"kind": "a"})),
            400,
            "invalid_field",
            "id: may contain only",
        ),
        row(
            "complete: id with a colon",
            c.post("/v2/sessions/ag:x/complete").bearer(KEY),
            400,
            "invalid_field",
            "id: may contain only",
        ),
        row(
            "state: id with a glob",
            c.get("/v2/sessions/a*").bearer(KEY),
            400,
            "invalid_field",
            "id: may contain only",
        ),
        row(
            // The gateway refuses the empty path segment before the API sees it.
            "append: empty id",
            c.post("/v2/sessions//events")
                .bearer(KEY)
                .json(&json!({"kind": "a"})),
            400,
            "bad_request",
            "invalid request path: an empty segment ('//')",
        ),
        row(
            "stream: id with a space",
            c.get("/v2/sessions/a%20b/stream").bearer(&session.token),
            400,
            "invalid_field",
            "id: may contain only",
        ),
        // unknown sessions
        row(
            "append: unknown session",
            c.post(&format!("/v2/sessions/{unknown}/events"))
                .bearer(KEY)
                .json(&json!({"kind": "a"})),
            404,
            "session_not_found",
            "session not found",
        ),
        row(
            "complete: unknown session",
            c.post(&format!("/v2/sessions/{unknown}/complete"))
                .bearer(KEY),
            404,
            "session_not_found",
            "session not found",
        ),
        row(
            "state: unknown session",
            c.get(&format!("/v2/sessions/{unknown}")).bearer(KEY),
            404,
            "session_not_found",
            "session not found",
        ),
        row(
            "stream: unknown session (valid token)",
            c.get(&format!(
                "/v2/sessions/{unknown}/stream?token={unknown_token}"
            )),
            404,
            "session_not_found",
            "session not found",
        ),
        // complete bodies
        row(
            "complete: bad status",
            c.post(&complete)
                .bearer(KEY)
                .json(&json!({"status": "done"})),
            400,
            "invalid_field",
            "status: must be one of succeeded, failed, cancelled",
        ),
        row(
            "complete: status of the wrong type",
            c.post(&complete).bearer(KEY).json(&json!({"status": 5})),
            400,
            "invalid_body",
            "body: invalid type",
        ),
        row(
            "complete: unknown field",
            c.post(&complete).bearer(KEY).json(&json!({"result": 1})),
            400,
            "invalid_body",
            "body: unknown field `result`",
        ),
        row(
            "complete: invalid JSON",
            c.post(&complete).bearer(KEY).raw_json("{"),
            400,
            "invalid_body",
            "body: ",
        ),
        row(
            "complete: text/plain",
            c.post(&complete)
                .bearer(KEY)
                .header("content-type", "text/plain")
                .body("{}"),
            415,
            "unsupported_media_type",
            "content-type: must be application/json",
        ),
        // stream cursors
        row(
            "stream: Last-Event-ID not an id",
            stream_with(Some("abc"), ""),
            400,
            "invalid_field",
            "last_event_id: must look like <milliseconds>-<sequence>",
        ),
        row(
            "stream: Last-Event-ID without sequence",
            stream_with(Some("5-"), ""),
            400,
            "invalid_field",
            "last_event_id: must look like",
        ),
        row(
            "stream: ?last_event_id with three parts",
            stream_with(None, "&last_event_id=1-2-3"),
            400,
            "invalid_field",
            "last_event_id: must look like",
        ),
        row(
            "stream: ?last_event_id overflowing",
            stream_with(None, "&last_event_id=99999999999999999999999-0"),
            400,
            "invalid_field",
            "last_event_id: must look like",
        ),
        // routes and methods
        row(
            "unknown route",
            c.get("/v2/nope").bearer(KEY),
            404,
            "no_route",
            "no route for /v2/nope",
        ),
        row(
            "unknown session action",
            c.post(&session.path("nope")).bearer(KEY),
            404,
            "no_route",
            "no route for",
        ),
        row(
            "tools: empty batch",
            c.post(&session.path("tools"))
                .bearer(KEY)
                .json(&json!({"calls": []})),
            400,
            "invalid_field",
            "calls: must hold at least one call",
        ),
    ];
    for (name, method, path, allow) in [
        ("GET init", Method::GET, "/v2/sessions".to_owned(), "POST"),
        (
            "DELETE a session",
            Method::DELETE,
            format!("/v2/sessions/{}", session.id),
            "GET",
        ),
        ("GET events", Method::GET, events.clone(), "POST"),
        ("PUT complete", Method::PUT, complete.clone(), "POST"),
        ("POST stream", Method::POST, session.path("stream"), "GET"),
        ("POST metrics", Method::POST, "/metrics".to_owned(), "GET"),
    ] {
        let mut r = row(
            name,
            c.call(method, &path).bearer(KEY),
            405,
            "method_not_allowed",
            &format!("method not allowed; use {allow}"),
        );
        r.allow = Some(allow);
        rows.push(r);
    }

    let initial = redis_state(&redis);
    assert_eq!(
        initial.len(),
        2,
        "only the session's meta key and its owner's quota set: {initial:?}"
    );
    for row in rows {
        let reply = gateway.client.send_call(row.call).await;
        assert_eq!(
            reply.status.as_u16(),
            row.status,
            "{}: status (body {})",
            row.name,
            reply.text
        );
        assert_eq!(
            reply.header("content-type"),
            Some("application/json"),
            "{}",
            row.name
        );
        assert_eq!(reply.error_code(), row.code, "{}: {}", row.name, reply.text);
        assert!(
            reply.error_message().starts_with(&row.message),
            "{}: message {:?} should start with {:?}",
            row.name,
            reply.error_message(),
            row.message
        );
        if let Some(allow) = row.allow {
            assert_eq!(reply.header("allow"), Some(allow), "{}", row.name);
        }
        assert_eq!(
            redis_state(&redis),
            initial,
            "{}: a rejected request changed Redis",
            row.name
        );
    }

    // Rejections are counted by route and status (by the API: not the empty id, which the
    // gateway's path check refused).
    let text = gateway.metrics().await;
    for (route, status, n) in [
        ("append", 400, 19.0),
        ("stream", 400, 4.0),
        ("unknown", 400, 6.0),
        ("unknown", 405, 6.0),
    ] {
        let series =
            format!(r#"agentgate_http_requests_total{{route="{route}",status="{status}"}}"#);
        assert_eq!(
            crate::gateway::metric(&text, &series),
            Some(n),
            "{series} in\n{text}"
        );
    }

    // The gateway still works afterwards, and the session was never touched.
    let ids = gateway.append(&session, &[json!({"kind": "ok"})]).await;
    assert_eq!(ids.len(), 1);
    assert_eq!(gateway.state(&session).await["event_count"], 1);
    // Init's body is optional: no body and no content type is fine.
    let bare = c.send_call(c.post("/v2/sessions").bearer(KEY)).await;
    assert_eq!(bare.status, 201, "{}", bare.text);
}

/// Append answers `body: must be a JSON object` for a JSON array, but init and complete
/// accept one: serde's derived `Deserialize` maps a sequence onto a struct's fields in
/// order, so `["failed", {"x": 1}]` completes a session as `failed` with final response
/// `{"x": 1}`, and `[{"a": 1}]` creates a session with metadata `{"a": 1}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_and_complete_reject_array_bodies() {
    let redis = blocking(RedisServer::start);
    let gateway = Gateway::start(&redis_config(&redis)).await;
    let c = &gateway.client;
    let session = gateway.init().await;
    let before = redis_state(&redis);
    for (name, call) in [
        (
            "init",
            c.post("/v2/sessions").bearer(KEY).raw_json(r#"[{"a":1}]"#),
        ),
        (
            "complete",
            c.post(&session.path("complete"))
                .bearer(KEY)
                .raw_json(r#"["failed",{"x":1}]"#),
        ),
    ] {
        let reply = c.send_call(call).await;
        assert_eq!(
            reply.status, 400,
            "{name} with an array body: {}",
            reply.text
        );
        assert_eq!(reply.error_code(), "invalid_body", "{name}");
        assert!(reply.error_message().starts_with("body: "), "{name}");
    }
    assert_eq!(redis_state(&redis), before, "an array body was written");
}
