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
use crate::failover::assert_retry_later;
use crate::gateway::{KEY, blocking, ids_until, lost_in_failover, metric, process_toml};
use crate::process::Process;
use crate::support::redis_cluster::RedisCluster;

/// The binary's configuration on `cluster`, with `extra` (more tables) after it.
fn node_toml(cluster: &RedisCluster, subscribe: &str, extra: &str) -> String {
    let urls: Vec<String> = cluster.urls().iter().map(|u| format!("{u:?}")).collect();
    let store = format!(
        "urls = [{}]\ncluster = true\nsubscribe = \"{subscribe}\"\ntimeout_ms = 1000\nconnect_timeout_ms = 300",
        urls.join(", ")
    );
    process_toml(&store, extra)
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

/// Completes the session through `client`; asserts 200.
async fn complete(client: &Client, id: &str) {
    let done = client
        .send_call(
            client
                .post(&format!("/v2/sessions/{id}/complete"))
                .bearer(KEY)
                .json(&json!({"final_response": "ok"})),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "complete: {}", done.text);
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

/// Waits until the node's `series` is `n`.
async fn metric_reaches(client: &Client, series: &str, n: f64) {
    within(&format!("{series} = {n}"), async {
        while node_metric(client, series).await != n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Waits until the node's `agentgate_store_subscriptions` is `n`.
async fn subscriptions_reach(client: &Client, n: f64) {
    metric_reaches(client, "agentgate_store_subscriptions", n).await;
}

/// Created on A, streamed from B, appended from C, resumed on B after A is killed; with
/// `subscribe` = `mode`, which nodes hear the writes.
async fn a_session_moves_between_nodes(mode: &str) {
    const NOTIFICATIONS: &str = "agentgate_store_notifications_total";
    let per_session = mode == "per_session";
    let cluster = blocking(RedisCluster::start);
    let [a, b, c] = three_nodes(&node_toml(&cluster, mode, ""));
    let (b, c) = (Client::new(b.addr), Client::new(c.addr));
    let a_client = Client::new(a.addr);
    let session = init(&a_client).await;

    // Streamed from B, appended from C: B gets every event, in order.
    let mut viewer = stream(&b, &session, None).await;
    if per_session {
        subscriptions_reach(&b, 1.0).await;
    }
    let mut acked = Vec::new();
    for n in 0..10 {
        acked.push(appended(&append(&c, &session.0, n).await));
    }
    assert_eq!(next_ids(&mut viewer, 10).await, acked);

    // Per session, only B subscribed, so only B hears the writes; with the pattern, every
    // node hears every write.
    metric_reaches(&b, NOTIFICATIONS, 10.0).await;
    if per_session {
        for other in [&a_client, &c] {
            assert_eq!(
                node_metric(other, "agentgate_store_subscriptions").await,
                0.0
            );
            assert_eq!(node_metric(other, NOTIFICATIONS).await, 0.0);
        }
    } else {
        metric_reaches(&a_client, NOTIFICATIONS, 10.0).await;
        metric_reaches(&c, NOTIFICATIONS, 10.0).await;
        assert_eq!(node_metric(&b, "agentgate_store_subscriptions").await, 0.0);
    }

    // A, where the session was created, is killed; B resumes it from the middle, exactly.
    drop(a);
    drop(viewer);
    let mut resumed = stream(&b, &session, Some(&acked[4])).await;
    for n in 10..15 {
        acked.push(appended(&append(&c, &session.0, n).await));
    }
    assert_eq!(next_ids(&mut resumed, 10).await, acked[5..]);
    complete(&c, &session.0).await;
    let last = resumed.next_event().await.expect("the complete event");
    assert_eq!(last.event.as_deref(), Some("complete"));
    resumed.expect_end().await;

    if per_session {
        // The last reader gone, B unsubscribes (after its linger).
        drop(resumed);
        subscriptions_reach(&b, 0.0).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_moves_between_three_nodes_and_each_hears_only_its_own() {
    a_session_moves_between_nodes("per_session").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_pattern_subscription_every_node_hears_every_write() {
    a_session_moves_between_nodes("pattern").await;
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
    complete(&c, &session.0).await;
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

/// Three nodes (`per_session`) on a cluster, a session created on A and followed on B, and
/// the first deltas appended through C, which the viewer has received.
struct Followed {
    /// The gateway processes (killed when dropped: bind it).
    _nodes: [Process; 3],
    a: Client,
    b: Client,
    c: Client,
    session: (String, String),
    viewer: SseStream,
    acked: Vec<String>,
}

async fn followed_on_b(cluster: &RedisCluster, first: usize) -> Followed {
    let nodes = three_nodes(&node_toml(cluster, "per_session", ""));
    let [a, b, c] = nodes.each_ref().map(|n| Client::new(n.addr));
    let session = init(&a).await;
    let mut viewer = stream(&b, &session, None).await;
    subscriptions_reach(&b, 1.0).await;
    let mut acked = Vec::new();
    for n in 0..first {
        acked.push(appended(&append(&c, &session.0, n).await));
    }
    assert_eq!(next_ids(&mut viewer, first).await, acked);
    Followed {
        _nodes: nodes,
        a,
        b,
        c,
        session,
        viewer,
        acked,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_is_replaced_and_streams_resume_exactly() {
    let mut cluster = blocking(|| RedisCluster::start_with_replicas(1));
    let Followed {
        _nodes,
        a,
        c,
        session,
        mut viewer,
        mut acked,
        ..
    } = followed_on_b(&cluster, 10).await;

    // The session's master dies mid-run: writes are refused (503, Retry-After) until its
    // replica is promoted, then succeed again, every one.
    let key = format!("ag:{{{}}}:meta", session.0);
    blocking(|| {
        let master = cluster.master_of(&key);
        cluster.kill(master);
    });
    let killed = Instant::now();
    let mut refused = 0;
    let mut n = acked.len();
    let mut recovered = None;
    while recovered.is_none() {
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "writes did not recover"
        );
        let reply = append(&c, &session.0, n).await;
        n += 1;
        if reply.status == StatusCode::OK {
            assert!(refused > 0, "a write succeeded with the master just killed");
            acked.push(appended(&reply));
            recovered = Some(killed.elapsed());
        } else {
            assert_retry_later(&reply, &["store_unavailable"]);
            refused += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for _ in 0..10 {
        acked.push(appended(&append(&c, &session.0, n).await));
        n += 1;
    }
    eprintln!(
        "cluster failover: writes refused for {} ms ({refused} refused)",
        recovered.unwrap_or_default().as_millis()
    );

    // The viewer, connected on B throughout, and a fresh replay on A: what survived (a
    // write the old master acknowledged may be gone) reached the viewer exactly once.
    let last = acked.last().expect("acknowledged writes").clone();
    let mut seen = acked[..10].to_vec();
    seen.extend(ids_until(&mut viewer, &last).await);
    let replay = ids_until(&mut stream(&a, &session, None).await, &last).await;
    let lost = lost_in_failover(&acked, &seen, &replay);
    // Every write acknowledged after the failover survived.
    assert!(lost.iter().all(|id| acked[..10].contains(id)), "{lost:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_follows_its_session_when_the_slot_moves() {
    let cluster = blocking(RedisCluster::start);
    let Followed {
        _nodes,
        b,
        c,
        session,
        mut viewer,
        mut acked,
        ..
    } = followed_on_b(&cluster, 5).await;

    // The session's slot moves to another master (its keys with it): the old master drops
    // B's sharded subscription, and B subscribes again where the slot is now.
    let key = format!("ag:{{{}}}:meta", session.0);
    blocking(|| cluster.move_slot_of(&key));
    for n in 5..10 {
        acked.push(appended(&append(&c, &session.0, n).await));
    }
    assert_eq!(next_ids(&mut viewer, 5).await, acked[5..]);
    assert_eq!(node_metric(&b, "agentgate_store_subscriptions").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_rate_limit_across_three_nodes_admits_its_rate() {
    const RATE: f64 = 20.0;
    const BURST: f64 = 20.0;
    let cluster = blocking(RedisCluster::start);
    let routes = format!(
        r#"
[[routes]]
name = "api"
kind = "agent"
path_prefix = "/"
[routes.rate_limit]
per_second = {RATE}
burst = {BURST}
key = "global"
store = "redis"
on_store_error = "closed"
"#
    );
    let nodes = three_nodes(&node_toml(&cluster, "per_session", &routes));
    let clients = nodes.each_ref().map(|n| Client::new(n.addr));
    // Every node asks as fast as it is answered for three seconds.
    let start = Instant::now();
    let run = Duration::from_secs(3);
    let tasks = clients.map(|client| {
        tokio::spawn(async move {
            let (mut admitted, mut refused) = (0u32, 0u32);
            while start.elapsed() < run {
                let reply = client.send_call(client.get("/healthz")).await;
                match reply.status {
                    StatusCode::OK => admitted += 1,
                    StatusCode::TOO_MANY_REQUESTS => refused += 1,
                    other => panic!("unexpected {other}: {}", reply.text),
                }
            }
            (admitted, refused)
        })
    });
    let (mut admitted, mut refused) = (0u32, 0u32);
    for task in tasks {
        let (a, r) = task.await.expect("node task");
        admitted += a;
        refused += r;
    }
    let elapsed = start.elapsed().as_secs_f64();
    // GCRA admits the burst, then one per 1/RATE s, whichever node asks.
    let expected = BURST + RATE * elapsed;
    eprintln!(
        "shared rate limit over 3 nodes: {admitted} admitted, {refused} refused in {elapsed:.2} s \
         (configured: {expected:.0})"
    );
    assert!(refused > 0, "the limit was never reached");
    let error = (f64::from(admitted) - expected).abs() / expected;
    assert!(
        error <= 0.05,
        "{admitted} admitted, {expected:.1} configured: {:.1}% off",
        error * 100.0
    );
}
