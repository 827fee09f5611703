//! A per-route priority queue through the gateway: under overload the important request
//! waits and succeeds while the unimportant one is shed with 503 and `Retry-After`, and the
//! queue slot is held until the proxied response has been sent; `/metrics` shows the shed
//! and the wait.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use tokio::sync::Notify;

use crate::edge::{Edge, eventually, peers};
use crate::origin::{Origin, text};

#[tokio::test]
async fn under_overload_high_priority_waits_and_low_priority_is_shed() {
    // The origin holds every response until the test releases it.
    let release = Arc::new(Notify::new());
    let gate = Arc::clone(&release);
    let origin = Origin::with_handler(move |_req| {
        let gate = Arc::clone(&gate);
        Box::pin(async move {
            gate.notified().await;
            text(StatusCode::OK, "done")
        })
    })
    .await;
    let edge = Edge::from_toml(&format!(
        r#"
[[routes]]
name = "ops"
kind = "agent"
path_prefix = "/metrics"
[[routes]]
name = "web"
kind = "upstream"
path_prefix = "/"
upstream = "origin"
[routes.priority_queue]
max_in_flight = 1
max_queue = 1
max_wait_ms = 60000
[upstreams.origin]
peers = [{}]
"#,
        peers(&[origin.addr])
    ))
    .await;

    // A (priority 1) takes the only slot and sits at the origin.
    let client = edge.client.clone();
    let first = tokio::spawn(async move {
        client
            .send_call(client.get("/a").header("x-priority", "1"))
            .await
    });
    eventually(
        "A reaches the origin",
        200,
        Duration::from_millis(20),
        || async { origin.requests() == 1 },
    )
    .await;

    // B (priority 1) and C (priority 9) compete for the one queue place. Whatever the
    // arrival order, B is shed: it either finds the place taken by the more important C,
    // or is evicted by C.
    let (cb, cc) = (edge.client.clone(), edge.client.clone());
    let low =
        tokio::spawn(async move { cb.send_call(cb.get("/b").header("x-priority", "1")).await });
    let high =
        tokio::spawn(async move { cc.send_call(cc.get("/c").header("x-priority", "9")).await });
    let low = low.await.expect("B's task");
    assert_eq!(low.status, StatusCode::SERVICE_UNAVAILABLE, "{}", low.text);
    assert_eq!(low.error_code(), "overloaded");
    assert_eq!(low.header("retry-after"), Some("1"));

    // Release the origin (repeatedly: C reaches it only after A's slot passes to C) until
    // both have answered; bounded.
    for _ in 0..2000 {
        if first.is_finished() && high.is_finished() {
            break;
        }
        release.notify_waiters();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(first.await.expect("A's task").status, StatusCode::OK);
    let high = high.await.expect("C's task");
    assert_eq!((high.status, high.text.as_str()), (StatusCode::OK, "done"));
    assert_eq!(origin.requests(), 2, "B never reached the origin");

    // The queue's metrics: B shed (full or evicted), C waited once, nobody waits now.
    let metrics = edge
        .client
        .send_call(edge.client.get("/metrics"))
        .await
        .text;
    let value = |series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let shed = value(r#"agentgate_queue_shed_total{route="web",priority="1",reason="queue_full"}"#)
        + value(r#"agentgate_queue_shed_total{route="web",priority="1",reason="evicted"}"#);
    assert_eq!(shed, 1.0, "{metrics}");
    assert_eq!(
        value(r#"agentgate_queue_wait_seconds_count{route="web",priority="9"}"#),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        value(r#"agentgate_queue_depth{route="web",priority="9"}"#),
        0.0,
        "{metrics}"
    );
    edge.stop().await;
}
