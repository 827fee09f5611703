//! Redis dies: calls answer 503 with Retry-After at once (no hang); open streams stay open;
//! Redis comes back: the same gateway process recovers by itself.

use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;

use crate::client::{Reply, SseFrame, within};
use crate::gateway::{Gateway, KEY, blocking, deltas, ids, metric, redis_config};
use crate::support::redis_server::RedisServer;

fn assert_unavailable(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 503, "{what}: {}", reply.text);
    assert_eq!(reply.error_code(), "store_unavailable", "{what}");
    assert_eq!(
        reply.header("retry-after"),
        Some("1"),
        "{what}: Retry-After"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_gives_503_and_the_gateway_recovers() {
    let mut redis = blocking(RedisServer::start);
    let mut config = redis_config(&redis);
    config.sse.heartbeat_secs = 1;
    let gateway = Gateway::start(&config).await;
    let c = &gateway.client;

    // A session nobody has streamed yet, so the existence cache knows nothing of it.
    let unstreamed = gateway.init().await;
    // A stream that is open and live before the outage; a task reads it continuously.
    let before = gateway.init().await;
    let mut stream = gateway.stream(&before).await;
    let first = gateway.append(&before, &deltas(0, 1)).await;
    assert_eq!(ids(&[stream.next_event().await.unwrap()]), first);
    let (frames_tx, mut frames) = mpsc::unbounded_channel::<Result<Option<SseFrame>, String>>();
    let reader = tokio::spawn(async move {
        loop {
            let next = stream.try_next().await.map_err(|e| format!("{e:?}"));
            let done = !matches!(next, Ok(Some(_)));
            if frames_tx.send(next).is_err() || done {
                return;
            }
        }
    });

    blocking(|| redis.kill());

    // Every store-backed call answers 503 promptly (a hang would hit the client's WAIT).
    let init = c
        .send_call(c.post("/v2/sessions").bearer(KEY).json(&json!({})))
        .await;
    assert_unavailable(&init, "init");
    let append = c
        .send_call(
            c.post(&before.path("events"))
                .bearer(KEY)
                .json(&json!({"kind": "delta"})),
        )
        .await;
    assert_unavailable(&append, "append");
    let complete = c
        .send_call(c.post(&before.path("complete")).bearer(KEY))
        .await;
    assert_unavailable(&complete, "complete");
    let state = c
        .send_call(c.get(&format!("/v2/sessions/{}", before.id)).bearer(KEY))
        .await;
    assert_unavailable(&state, "state");
    match c.stream(c.get(&unstreamed.stream_path())).await {
        Ok(_) => panic!("a new stream of an unknown session was accepted while Redis is down"),
        Err(reply) => assert_unavailable(&reply, "new stream"),
    }

    // The open stream keeps its connection: its pump is alive, nothing ended or failed.
    let gauge = metric(&gateway.metrics().await, "agentgate_sse_active_streams");
    assert_eq!(gauge, Some(1.0), "the open stream is still served");
    while let Ok(frame) = frames.try_recv() {
        assert!(
            matches!(&frame, Ok(Some(f)) if f.is_comment()),
            "open stream during the outage: {frame:?}"
        );
    }

    // A session the existence cache vouched for within its TTL still connects: the stream
    // stays open on heartbeats and resumes when Redis is back.
    let mut cached = c
        .stream(c.get(&before.stream_path()))
        .await
        .unwrap_or_else(|r| panic!("a stream of a cached session was refused: {}", r.status));
    cached.expect_retry().await;
    drop(cached);

    // Redis is back (empty, same port): the same gateway recovers within a bounded wait.
    blocking(|| redis.restart());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let after = loop {
        let reply = c
            .send_call(c.post("/v2/sessions").bearer(KEY).json(&json!({})))
            .await;
        if reply.status == 201 {
            break reply;
        }
        assert_unavailable(&reply, "init while Redis restarts");
        assert!(
            tokio::time::Instant::now() < deadline,
            "init still fails 10 s after Redis restarted: {}",
            reply.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let after = crate::gateway::Session {
        id: after.json["id"].as_str().unwrap().to_owned(),
        token: after.json["stream_token"].as_str().unwrap().to_owned(),
        stream_url: after.json["stream_url"].as_str().unwrap().to_owned(),
    };

    // A new session streams live again (the notification subscription is back).
    let mut live = gateway.stream(&after).await;
    let mut expected = gateway.append(&after, &deltas(0, 3)).await;
    expected.extend(gateway.append(&after, &deltas(3, 2)).await);
    expected.push(gateway.complete(&after, &json!("back")).await);
    assert_eq!(ids(&live.events_to_end().await), expected);

    // The old session's data died with Redis: its stream ends cleanly, never with an error.
    loop {
        match within("the old stream to end", frames.recv()).await {
            Some(Ok(Some(frame))) => assert!(
                frame.is_comment(),
                "old stream sent an event after Redis lost its data: {frame:?}"
            ),
            Some(Ok(None)) => break,
            Some(Err(e)) => panic!("old stream failed instead of ending: {e}"),
            None => panic!("reader stopped without reporting the end"),
        }
    }
    within("the reader task", reader).await.unwrap();
}

/// The stream module promises "if the store is unavailable the stream stays open
/// (heartbeats go on)". After a heartbeat the pump re-reads the store; when that read fails
/// it loops on "sleep, read again" without sending heartbeats, so a stream goes silent for
/// the whole outage (and a proxy's idle timeout would cut it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_go_on_while_redis_is_down() {
    let mut redis = blocking(RedisServer::start);
    let mut config = redis_config(&redis);
    config.sse.heartbeat_secs = 1;
    let gateway = Gateway::start(&config).await;
    let session = gateway.init().await;
    let mut stream = gateway.stream(&session).await;
    let (frames_tx, mut frames) = mpsc::unbounded_channel::<Result<Option<SseFrame>, String>>();
    tokio::spawn(async move {
        loop {
            let next = stream.try_next().await.map_err(|e| format!("{e:?}"));
            let done = !matches!(next, Ok(Some(_)));
            if frames_tx.send(next).is_err() || done {
                return;
            }
        }
    });

    blocking(|| redis.kill());
    while frames.try_recv().is_ok() {}
    // At most one heartbeat can have been in flight before the kill; three more must come.
    for n in 1..=3 {
        match within(&format!("heartbeat {n} while Redis is down"), frames.recv()).await {
            Some(Ok(Some(frame))) if frame.is_comment() => {}
            other => panic!("expected heartbeat {n} while Redis is down, got {other:?}"),
        }
    }
}
