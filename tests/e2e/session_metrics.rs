//! The session-level operator metrics move: live sessions up and down (create, complete,
//! expiry), end-to-end session duration, memory per session, the SSE fan-out ratio and the
//! Redis connections the gateway holds — read from the admin listener's `/metrics`.

use std::time::Duration;

use agentgate_config::Config;
use serde_json::json;

use crate::client::{Client, within};
use crate::gateway::{
    Gateway, blocking, deltas, memory_config, memory_config_with, metric, redis_config,
};
use crate::support::redis_server::RedisServer;

fn with_admin(mut config: Config) -> Config {
    config.server.admin_listen = Some("127.0.0.1:0".parse().expect("addr"));
    config
}

/// `series`'s value on the admin listener's `/metrics` (0 when absent).
async fn read(admin: &Client, series: &str) -> f64 {
    let text = admin.send_call(admin.get("/metrics")).await.text;
    metric(&text, series).unwrap_or(0.0)
}

/// Waits until `series` satisfies `ok`; returns its value. Bounded by the client's WAIT.
async fn until(admin: &Client, series: &str, ok: impl Fn(f64) -> bool) -> f64 {
    within(&format!("{series} to reach the expected value"), async {
        loop {
            let value = read(admin, series).await;
            if ok(value) {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

const ACTIVE: &str = "agentgate_sessions_active";
const DURATIONS: &str = "agentgate_session_duration_seconds_count";
const MEMORY: &str = "agentgate_session_memory_bytes";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_counts_sessions_exactly_and_measures_them() {
    let gateway = Gateway::start(&with_admin(memory_config())).await;
    let admin = gateway.admin.clone().expect("admin listener");
    assert_eq!(read(&admin, ACTIVE).await, 0.0);

    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(gateway.init().await);
    }
    assert_eq!(read(&admin, ACTIVE).await, 3.0);

    // 40 events of ~1 KiB on one session: the average over three sessions exceeds 13 KB.
    let big = "x".repeat(1024);
    let events: Vec<_> = (0..40)
        .map(|i| json!({"kind": "delta", "data": {"n": i, "text": big}}))
        .collect();
    gateway.append(&sessions[0], &events).await;
    let bytes = until(&admin, MEMORY, |b| b > 13_000.0).await;
    assert!(bytes < 100_000.0, "an honest estimate, not RSS: {bytes}");

    gateway.complete(&sessions[0], &json!("done")).await;
    assert_eq!(read(&admin, ACTIVE).await, 2.0);
    assert_eq!(read(&admin, DURATIONS).await, 1.0);
    // Completing twice is refused and observes nothing.
    let again = gateway
        .client
        .send_call(
            gateway
                .client
                .post(&sessions[0].path("complete"))
                .bearer(crate::gateway::KEY)
                .json(&json!({})),
        )
        .await;
    assert_eq!(again.status, http::StatusCode::CONFLICT);
    assert_eq!(read(&admin, DURATIONS).await, 1.0);
    assert_eq!(read(&admin, ACTIVE).await, 2.0);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_session_leaves_the_count_when_it_expires() {
    let gateway = Gateway::start(&with_admin(memory_config_with("session_ttl_secs = 1\n"))).await;
    let admin = gateway.admin.clone().expect("admin listener");
    gateway.init().await;
    assert_eq!(read(&admin, ACTIVE).await, 1.0);
    until(&admin, ACTIVE, |n| n == 0.0).await;
    assert_eq!(
        read(&admin, DURATIONS).await,
        0.0,
        "expiry is no completion"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_ratio_is_client_streams_per_store_tail() {
    let gateway = Gateway::start(&with_admin(memory_config())).await;
    let admin = gateway.admin.clone().expect("admin listener");
    let session = gateway.init().await;
    gateway.append(&session, &deltas(0, 2)).await;
    let mut viewers = Vec::new();
    for _ in 0..3 {
        viewers.push(gateway.stream(&session).await);
    }
    until(&admin, "agentgate_sse_client_streams", |n| n == 3.0).await;
    assert_eq!(read(&admin, "agentgate_sse_active_streams").await, 1.0);
    assert_eq!(read(&admin, "agentgate_sse_fanout_ratio").await, 3.0);
    drop(viewers);
    until(&admin, "agentgate_sse_client_streams", |n| n == 0.0).await;
    until(&admin, "agentgate_sse_fanout_ratio", |r| r == 0.0).await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_counts_its_sessions_connections_and_memory() {
    let redis = blocking(RedisServer::start);
    let gateway = Gateway::start(&with_admin(redis_config(&redis))).await;
    let admin = gateway.admin.clone().expect("admin listener");
    let a = gateway.init().await;
    let b = gateway.init().await;
    assert_eq!(read(&admin, ACTIVE).await, 2.0);
    gateway.append(&a, &deltas(0, 20)).await;

    // Many streams, still the same two connections: commands and notifications.
    let mut streams = Vec::new();
    for session in [&a, &b, &a, &b] {
        streams.push(gateway.stream(session).await);
    }
    until(&admin, "agentgate_store_connections", |n| n == 2.0).await;
    let info = blocking(|| redis.command(&["INFO", "clients"])).expect("redis answers");
    let clients: f64 = info
        .lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("connected_clients");
    // redis-cli itself is one of them.
    assert_eq!(clients - 1.0, 2.0, "{info}");

    // MEMORY USAGE of a session with events, sampled.
    until(&admin, MEMORY, |b| b > 500.0).await;

    gateway.complete(&a, &json!({"answer": 42})).await;
    assert_eq!(read(&admin, ACTIVE).await, 1.0);
    assert_eq!(read(&admin, DURATIONS).await, 1.0);
    let sum = read(&admin, "agentgate_session_duration_seconds_sum").await;
    assert!(sum >= 0.0, "{sum}");
    drop(streams);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_nodes_the_completing_node_times_the_session_and_each_counts_its_own() {
    let redis = blocking(RedisServer::start);
    let config = with_admin(redis_config(&redis));
    let a = Gateway::start(&config).await;
    let b = Gateway::start(&config).await;
    let (admin_a, admin_b) = (
        a.admin.clone().expect("admin"),
        b.admin.clone().expect("admin"),
    );

    // Created on A, completed on B: B times it from the creation time A stored.
    let session = a.init().await;
    assert_eq!(read(&admin_a, ACTIVE).await, 1.0);
    assert_eq!(read(&admin_b, ACTIVE).await, 0.0);
    b.complete(&session, &json!("done")).await;
    assert_eq!(read(&admin_b, DURATIONS).await, 1.0);
    assert_eq!(read(&admin_a, DURATIONS).await, 0.0);
    // Documented scope: A does not see B's completion; it keeps counting the session until
    // its idle deadline, and B never counted it.
    assert_eq!(read(&admin_a, ACTIVE).await, 1.0);
    assert_eq!(read(&admin_b, ACTIVE).await, 0.0);
    a.stop().await;
    b.stop().await;
}
