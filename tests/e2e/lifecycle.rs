//! A session from init to complete, live and replayed, on both engines.

use serde_json::json;

use crate::gateway::{Gateway, blocking, ids, memory_config, redis_config};
use crate::support::redis_server::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_memory() {
    let gateway = Gateway::start(&memory_config()).await;
    lifecycle(&gateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_redis() {
    let redis = blocking(RedisServer::start);
    let gateway = Gateway::start(&redis_config(&redis)).await;
    let session = lifecycle(&gateway).await;
    // Retention: both keys of the completed session expire.
    let keys = blocking(|| redis.keys());
    let expected = vec![
        format!("ag:{{{session}}}:events"),
        format!("ag:{{{session}}}:meta"),
    ];
    assert_eq!(keys, expected, "the session's keys, and nothing else");
    for key in expected {
        let pttl: i64 = blocking(|| redis.command(&["PTTL", &key]))
            .expect("PTTL")
            .trim()
            .parse()
            .expect("PTTL is a number");
        assert!(pttl > 0, "{key} has PTTL {pttl}, expected a TTL");
    }
}

/// Runs the whole lifecycle; returns the session id.
async fn lifecycle(gateway: &Gateway) -> String {
    let session = gateway
        .init_with(&json!({"metadata": {"user": "u1", "tags": ["a", "b"]}}))
        .await;
    // The stream URL works as-is (absolute, token in the query).
    let mut live = gateway.open(gateway.client.get(&session.stream_url)).await;
    assert_eq!(
        live.headers
            .get("cache-control")
            .map(|v| v.to_str().unwrap()),
        Some("no-cache")
    );
    let batch = vec![
        json!({"kind": "delta", "data": {"text": "hel"}}),
        json!({"kind": "delta", "data": {"text": "lo\nworld"}}),
        json!({"kind": "tool.call", "data": [1, 2, 3]}),
        json!({"kind": "status:thinking"}),
        json!({"kind": "Final-Answer_1", "data": "done"}),
    ];
    let appended = gateway.append(&session, &batch).await;
    let mut sorted = appended.clone();
    sorted.sort_by_key(|id| {
        let (ms, seq) = id.split_once('-').expect("ms-seq id");
        (ms.parse::<u64>().unwrap(), seq.parse::<u64>().unwrap())
    });
    assert_eq!(sorted, appended, "ids of a batch increase");

    let frames = live.events(batch.len()).await;
    assert_eq!(ids(&frames), appended);
    for (frame, sent) in frames.iter().zip(&batch) {
        assert_eq!(frame.event.as_deref(), sent["kind"].as_str());
        assert_eq!(frame.json(), sent["data"], "data of {frame:?}");
    }

    let final_response = json!({"answer": "hello world", "tokens": 42});
    let complete_id = gateway.complete(&session, &final_response).await;
    let complete = live.next_event().await.expect("the complete event");
    assert_eq!(complete.event.as_deref(), Some("complete"));
    assert_eq!(complete.id.as_deref(), Some(complete_id.as_str()));
    assert_eq!(
        complete.json(),
        json!({"status": "succeeded", "final_response": final_response})
    );
    live.expect_end().await;

    let state = gateway.state(&session).await;
    assert_eq!(state["id"], session.id);
    assert_eq!(state["status"], "succeeded");
    assert_eq!(state["event_count"], 6);
    assert_eq!(state["final_response"], final_response);
    assert_eq!(state["metadata"], json!({"user": "u1", "tags": ["a", "b"]}));
    let created = state["created_at"].as_u64().expect("created_at");
    let completed = state["completed_at"].as_u64().expect("completed_at");
    assert!(completed >= created, "{state}");

    // Completing again conflicts.
    let again = gateway
        .client
        .send_call(
            gateway
                .client
                .post(&session.path("complete"))
                .bearer(crate::gateway::KEY)
                .json(&json!({"status": "failed"})),
        )
        .await;
    assert_eq!(again.status, 409, "{}", again.text);
    assert_eq!(again.error_code(), "session_completed");
    // So does appending.
    let late = gateway
        .client
        .send_call(
            gateway
                .client
                .post(&session.path("events"))
                .bearer(crate::gateway::KEY)
                .json(&json!({"kind": "delta"})),
        )
        .await;
    assert_eq!(late.status, 409, "{}", late.text);

    // Replaying the finished session from the start: every event, then the end.
    let mut replay = gateway.stream(&session).await;
    let all = replay.events_to_end().await;
    let mut expected = appended.clone();
    expected.push(complete_id.clone());
    assert_eq!(ids(&all), expected);
    assert_eq!(all.last().unwrap().event.as_deref(), Some("complete"));

    // Resuming after the complete event: nothing, then the end.
    let mut after_end = gateway
        .open(
            gateway
                .client
                .get(&session.stream_path())
                .header("last-event-id", &complete_id),
        )
        .await;
    after_end.expect_end().await;

    // Resuming from the middle of a finished session: the rest, then the end.
    let mut middle = gateway
        .open(gateway.client.get(&format!(
            "{}&last_event_id={}",
            session.stream_path(),
            appended[1]
        )))
        .await;
    assert_eq!(ids(&middle.events_to_end().await), expected[2..].to_vec());
    session.id
}
