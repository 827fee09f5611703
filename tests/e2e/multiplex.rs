//! `GET /v2/stream?sessions=..&tokens=..`: one connection follows many sessions; resuming
//! with the last frame's id as `Last-Event-ID` is exact for every session at once.

use std::collections::HashMap;

use http::StatusCode;
use serde_json::json;

use crate::client::SseStream;
use crate::gateway::{Gateway, Prng, Session, blocking, deltas, redis_config};
use crate::support::redis_server::RedisServer;

/// `/v2/stream` for `sessions`, each with its token.
pub(crate) fn mux_path(sessions: &[Session]) -> String {
    let ids: Vec<&str> = sessions.iter().map(|s| s.id.as_str()).collect();
    let tokens: Vec<&str> = sessions.iter().map(|s| s.token.as_str()).collect();
    format!(
        "/v2/stream?sessions={}&tokens={}",
        ids.join(","),
        tokens.join(",")
    )
}

/// Opens the multiplexed stream of `sessions`, resuming from `cursor`; asserts 200.
pub(crate) async fn open(
    gateway: &Gateway,
    sessions: &[Session],
    cursor: Option<&str>,
) -> SseStream {
    let mut call = gateway.client.get(&mux_path(sessions));
    if let Some(cursor) = cursor {
        call = call.header("last-event-id", cursor);
    }
    gateway
        .client
        .stream(call)
        .await
        .unwrap_or_else(|r| panic!("multiplex refused: {} {}", r.status, r.text))
}

/// What a client has received, per session, and the cursor to resume from.
#[derive(Default)]
struct Received {
    ids: HashMap<String, Vec<String>>,
    cursor: Option<String>,
}

impl Received {
    /// Reads `n` events from `stream`.
    async fn read(&mut self, stream: &mut SseStream, n: usize) {
        for _ in 0..n {
            let frame = stream.next_event().await.expect("an event, got the end");
            self.record(&frame);
        }
    }

    fn record(&mut self, frame: &crate::client::SseFrame) {
        let envelope = frame.json();
        let session = envelope["stream"].as_str().expect("stream").to_owned();
        let id = envelope["id"].as_str().expect("id").to_owned();
        self.ids.entry(session).or_default().push(id);
        self.cursor = Some(frame.id.clone().expect("every frame has an id"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_of_five_sessions_is_exact_across_random_disconnects() {
    let redis = blocking(RedisServer::start);
    let gateway = Gateway::start(&redis_config(&redis)).await;
    let mut sessions = Vec::new();
    for _ in 0..5 {
        sessions.push(gateway.init().await);
    }
    let mut expected: HashMap<String, Vec<String>> = HashMap::new();
    let mut received = Received::default();
    let mut pending = 0;
    let mut prng = Prng(0x2545_f491_4f6c_dd1d);

    for trial in 0..20 {
        // Some sessions get events while the client is away...
        for _ in 0..1 + prng.below(4) {
            let session = &sessions[prng.below(sessions.len())];
            let n = 1 + prng.below(3);
            let ids = gateway.append(session, &deltas(trial * 10, n)).await;
            expected.entry(session.id.clone()).or_default().extend(ids);
            pending += n;
        }
        let mut stream = open(&gateway, &sessions, received.cursor.as_deref()).await;
        // ...some while it is connected...
        let session = &sessions[prng.below(sessions.len())];
        let ids = gateway.append(session, &deltas(trial * 10 + 5, 2)).await;
        expected.entry(session.id.clone()).or_default().extend(ids);
        pending += 2;
        // ...and it reads a random part of what is pending, then drops the connection.
        let k = 1 + prng.below(pending);
        received.read(&mut stream, k).await;
        pending -= k;
        drop(stream);
    }

    // Every session completes; the last connection reads the rest and ends by itself.
    for session in &sessions {
        let id = gateway.complete(session, &json!("done")).await;
        expected.entry(session.id.clone()).or_default().push(id);
        pending += 1;
    }
    let mut stream = open(&gateway, &sessions, received.cursor.as_deref()).await;
    for frame in stream.events_to_end().await {
        received.record(&frame);
        pending -= 1;
    }
    assert_eq!(pending, 0);
    for session in &sessions {
        assert_eq!(
            received.ids.get(&session.id),
            expected.get(&session.id),
            "session {}: no gap, no duplicate, in order",
            session.id
        );
    }
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_outlives_a_completed_session_and_ends_with_the_last() {
    let redis = blocking(RedisServer::start);
    let gateway = Gateway::start(&redis_config(&redis)).await;
    let (a, b) = (gateway.init().await, gateway.init().await);
    let both = [a.clone(), b.clone()];
    let mut stream = open(&gateway, &both, None).await;
    let mut received = Received::default();
    gateway.complete(&a, &json!("a done")).await;
    received.read(&mut stream, 1).await;
    let later = gateway.append(&b, &deltas(0, 1)).await;
    received.read(&mut stream, 1).await;
    assert_eq!(received.ids[&b.id], later);
    let last = gateway.complete(&b, &json!("b done")).await;
    received.read(&mut stream, 1).await;
    assert_eq!(received.ids[&b.id].last(), Some(&last));
    stream.expect_end().await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_session_is_authorised_and_bad_requests_name_the_problem() {
    let redis = blocking(RedisServer::start);
    let gateway = Gateway::start(&redis_config(&redis)).await;
    let (a, b) = (gateway.init().await, gateway.init().await);
    let c = &gateway.client;
    let refused = |target: String, cursor: Option<&'static str>| async move {
        let mut call = c.get(&target);
        if let Some(cursor) = cursor {
            call = call.header("last-event-id", cursor);
        }
        c.send_call(call).await
    };
    // b presented with a's token: refused, naming b.
    let reply = refused(
        format!(
            "/v2/stream?sessions={},{}&tokens={},{}",
            a.id, b.id, a.token, a.token
        ),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text);
    assert_eq!(reply.error_code(), "stream_refused");
    assert!(reply.error_message().contains(&b.id), "{}", reply.text);

    let cases = [
        ("/v2/stream".to_owned(), None, "sessions"),
        (
            format!("/v2/stream?sessions={},{}", a.id, a.id),
            None,
            "listed twice",
        ),
        (
            format!(
                "/v2/stream?sessions={}&tokens={},{}",
                a.id, a.token, b.token
            ),
            None,
            "tokens",
        ),
        (
            format!("/v2/stream?sessions={}&tokens={}", a.id, a.token),
            Some("not-a-cursor"),
            "Last-Event-ID",
        ),
    ];
    for (target, cursor, named) in cases {
        let reply = refused(target.clone(), cursor).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{target}: {}",
            reply.text
        );
        assert!(
            reply.error_message().contains(named),
            "{target}: {}",
            reply.text
        );
    }
    let many: Vec<String> = (0..17).map(|i| format!("s{i}")).collect();
    let reply = refused(format!("/v2/stream?sessions={}", many.join(",")), None).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        reply.error_message().contains("at most 16"),
        "{}",
        reply.text
    );
    gateway.stop().await;
}
