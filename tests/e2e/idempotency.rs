//! Exactly-once writes with `Idempotency-Key`: an append (and a complete) whose response is
//! lost after the store applied it is retried, and the retry returns the original ids and
//! writes nothing; a write no replica confirmed (`503 replicas_unconfirmed`) is retried
//! until the replicas have it, and is applied once. Bad and reused keys answer JSON errors.
//!
//! The lost response is real: a one-connection TCP relay in front of the gateway forwards
//! the request, reads the gateway's whole response (so the write was applied and answered)
//! and closes the client's connection without relaying a byte of it.

use std::net::SocketAddr;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::client::{Reply, within};
use crate::failover::first_session;
use crate::gateway::{
    Gateway, KEY, OTHER_KEY, blocking, deltas, ids, memory_config, redis_config,
    sentinel_config_with,
};
use crate::support::redis_sentinel::RedisSentinel;
use crate::support::redis_server::RedisServer;

/// Sends `request` to `gateway` through a relay that swallows the response: the client
/// side is closed before any byte of it is relayed. Returns the response the client never
/// got (its JSON body), once the client saw its connection close with nothing.
async fn lose_the_response(gateway: SocketAddr, request: Vec<u8>) -> Value {
    let relay = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let swallowed = tokio::spawn(async move {
        let (client, _) = relay.accept().await.unwrap();
        let (mut from_client, _to_client) = client.into_split();
        let upstream = TcpStream::connect(gateway).await.unwrap();
        let (mut from_gateway, mut to_gateway) = upstream.into_split();
        let forward =
            tokio::spawn(async move { tokio::io::copy(&mut from_client, &mut to_gateway).await });
        // `Connection: close`: the gateway ends the connection after its response.
        let mut response = Vec::new();
        from_gateway.read_to_end(&mut response).await.unwrap();
        forward.abort();
        // `_to_client` and the client's read half drop here: the client's connection
        // closes without a byte of the response.
        response
    });
    let mut client = TcpStream::connect(relay_addr).await.unwrap();
    client.write_all(&request).await.unwrap();
    let mut got = Vec::new();
    // A reset is as good as an end: either way no response arrived.
    let _ = within("the relay to close", client.read_to_end(&mut got)).await;
    assert!(
        got.is_empty(),
        "the client got a response: {}",
        String::from_utf8_lossy(&got)
    );
    let response = within("the swallowed response", swallowed).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "applied: {text}");
    // The body is one JSON object (whether or not it came chunked).
    let body = &text[text.find('{').unwrap()..=text.rfind('}').unwrap()];
    serde_json::from_str(body).unwrap()
}

/// A raw HTTP/1.1 `POST` of `body` to `path` as [`KEY`] with `Idempotency-Key: key`.
fn post(path: &str, key: &str, body: &Value) -> Vec<u8> {
    let body = body.to_string();
    format!(
        "POST {path} HTTP/1.1\r\nhost: agentgate\r\nauthorization: Bearer {KEY}\r\n\
         content-type: application/json\r\nidempotency-key: {key}\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// `POST path` with `body` and `Idempotency-Key: key`, as `bearer`, on the direct client.
async fn send(gateway: &Gateway, bearer: &str, path: &str, key: &str, body: &Value) -> Reply {
    let c = &gateway.client;
    c.send_call(
        c.post(path)
            .bearer(bearer)
            .header("idempotency-key", key)
            .json(body),
    )
    .await
}

/// The ids of an append answer.
fn answer_ids(answer: &Value) -> Vec<String> {
    answer["ids"]
        .as_array()
        .unwrap_or_else(|| panic!("no ids in {answer}"))
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect()
}

/// An append and a complete whose responses are lost; their retries answer the same ids,
/// marked as replays, and the stream holds every event once. Returns the session id.
async fn lost_responses_are_retried_once(gateway: &Gateway) -> String {
    let session = gateway.init().await;
    let events = json!({ "events": deltas(0, 3) });
    let path = session.path("events");
    let lost = lose_the_response(gateway.client.addr(), post(&path, "append-1", &events)).await;
    let retry = send(gateway, KEY, &path, "append-1", &events).await;
    assert_eq!(retry.status, 200, "{}", retry.text);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        answer_ids(&retry.json),
        answer_ids(&lost),
        "the original ids"
    );
    // A second retry is the same again; a new key is a new append.
    let again = send(gateway, KEY, &path, "append-1", &events).await;
    assert_eq!(answer_ids(&again.json), answer_ids(&lost));
    let next = json!({ "events": deltas(3, 1) });
    let fresh = send(gateway, KEY, &path, "append-2", &next).await;
    assert_eq!(fresh.status, 200, "{}", fresh.text);
    assert_eq!(fresh.header("idempotent-replayed"), None, "a fresh write");

    let done = json!({"status": "succeeded", "final_response": {"text": "bye"}});
    let path = session.path("complete");
    let lost_end = lose_the_response(gateway.client.addr(), post(&path, "finish-1", &done)).await;
    let end = send(gateway, KEY, &path, "finish-1", &done).await;
    assert_eq!(end.status, 200, "{}", end.text);
    assert_eq!(end.header("idempotent-replayed"), Some("true"));
    assert_eq!(end.json, lost_end, "the original answer");
    // After completion, the append's retry still gets its original ids.
    let late = send(gateway, KEY, &session.path("events"), "append-1", &events).await;
    assert_eq!(late.status, 200, "{}", late.text);
    assert_eq!(answer_ids(&late.json), answer_ids(&lost));

    let frames = gateway.stream(&session).await.events_to_end().await;
    let mut expected = answer_ids(&lost);
    expected.extend(answer_ids(&fresh.json));
    expected.push(lost_end["event_id"].as_str().unwrap().to_owned());
    assert_eq!(ids(&frames), expected, "every event once");
    assert_eq!(gateway.state(&session).await["event_count"], 5);
    session.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_response_is_retried_once_on_redis() {
    let redis = blocking(RedisServer::start);
    let gateway = Gateway::start(&redis_config(&redis)).await;
    let id = lost_responses_are_retried_once(&gateway).await;
    // The records are two more keys of the session, expiring with it, named without the
    // keys; the record values hold no key either.
    let keys = blocking(|| redis.keys());
    let expected: Vec<String> = ["events", "idem", "idem:order", "meta"]
        .iter()
        .map(|part| format!("ag:{{{id}}}:{part}"))
        .collect();
    assert_eq!(keys, expected, "the session's keys, and nothing else");
    for key in &expected {
        let pttl = blocking(|| redis.command(&["PTTL", key])).expect("PTTL");
        assert!(
            pttl.trim().parse::<i64>().unwrap() > 0,
            "{key}: PTTL {pttl}"
        );
    }
    let dump = format!("{:?}", blocking(|| redis.dump()));
    for key in ["append-1", "append-2", "finish-1"] {
        assert!(!dump.contains(key), "{key} stored in clear: {dump}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_response_is_retried_once_on_memory() {
    let gateway = Gateway::start(&memory_config()).await;
    lost_responses_are_retried_once(&gateway).await;
}

/// A write no replica confirmed answers 503 and was applied on the master; its retries
/// with the same key write nothing, and answer 200 with the original ids once the replica
/// is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_write_is_retried_once() {
    let mut setup = blocking(RedisSentinel::start);
    let extra = "ack_replicas = 1\nack_timeout_ms = 200";
    let gateway = Gateway::start(&sentinel_config_with(&setup, extra)).await;
    let session = first_session(&gateway).await;
    let path = session.path("events");
    let events = json!({ "events": deltas(0, 2) });

    blocking(|| setup.replica.kill());
    for _ in 0..2 {
        let reply = send(&gateway, KEY, &path, "unconfirmed", &events).await;
        assert_eq!(reply.status, 503, "{}", reply.text);
        assert_eq!(reply.error_code(), "replicas_unconfirmed");
    }
    blocking(|| {
        setup.replica.restart();
        setup.wait_for_replica();
    });
    let reply = send(&gateway, KEY, &path, "unconfirmed", &events).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("idempotent-replayed"), Some("true"));

    assert_eq!(
        gateway.state(&session).await["event_count"],
        2,
        "applied once"
    );
    let mut stream = gateway.stream(&session).await;
    let frames = stream.events(2).await;
    assert_eq!(ids(&frames), answer_ids(&reply.json), "the original ids");
}

/// Hostile and mistaken keys: JSON errors naming the header, nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_reused_keys_answer_json_errors() {
    let gateway = Gateway::start(&memory_config()).await;
    let session = gateway.init().await;
    let path = session.path("events");
    let events = json!({ "events": deltas(0, 1) });
    let long = "k".repeat(129);
    for bad in ["a b", long.as_str(), "caf\u{e9}"] {
        let c = &gateway.client;
        let reply = c
            .send_call(
                c.post(&path)
                    .bearer(KEY)
                    .header("idempotency-key", bad)
                    .json(&events),
            )
            .await;
        assert_eq!(reply.status, 400, "{bad:?}: {}", reply.text);
        assert_eq!(reply.error_code(), "invalid_field");
        assert!(
            reply.error_message().starts_with("Idempotency-Key: "),
            "{}",
            reply.text
        );
    }
    let c = &gateway.client;
    let twice = c
        .send_call(
            c.post(&path)
                .bearer(KEY)
                .header("idempotency-key", "a")
                .header("idempotency-key", "b")
                .json(&events),
        )
        .await;
    assert_eq!(twice.status, 400, "{}", twice.text);
    assert_eq!(twice.error_message(), "Idempotency-Key: must be sent once");

    let first = send(&gateway, KEY, &path, "k", &events).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let other_events = json!({ "events": deltas(1, 1) });
    for (path, body) in [
        (path.clone(), other_events),
        (session.path("complete"), json!({})),
    ] {
        let reused = send(&gateway, KEY, &path, "k", &body).await;
        assert_eq!(reused.status, 422, "{}", reused.text);
        assert_eq!(reused.error_code(), "idempotency_key_reused");
        assert!(reused.error_message().contains("Idempotency-Key"));
    }
    // Another API key cannot replay the owner's answer.
    let foreign = send(&gateway, OTHER_KEY, &path, "k", &events).await;
    assert_eq!(foreign.status, 403, "{}", foreign.text);
    assert_eq!(gateway.state(&session).await["event_count"], 1);
    assert_eq!(gateway.state(&session).await["status"], "running");
}
