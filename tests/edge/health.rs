//! Active health checks: a peer failing its check stops getting traffic, and gets it again
//! once it passes.

use std::time::Duration;

use http::StatusCode;

use crate::edge::{Edge, eventually, peers};
use crate::origin::Origin;

/// Sends `n` requests; returns how many each of `a`, `b` answered.
async fn spread(edge: &Edge, n: usize) -> (usize, usize) {
    let mut counts = (0, 0);
    for _ in 0..n {
        let reply = edge.client.send_call(edge.client.get("/hc")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        match reply.text.as_str() {
            "a" => counts.0 += 1,
            "b" => counts.1 += 1,
            other => panic!("answered by {other:?}"),
        }
    }
    counts
}

#[tokio::test]
async fn a_failing_peer_is_ejected_and_readmitted() {
    let (a, b) = (Origin::start("a").await, Origin::start("b").await);
    let edge = Edge::from_toml(&format!(
        r#"
[[routes]]
name = "all"
kind = "upstream"
upstream = "pool"
[upstreams.pool]
peers = [{}]
[upstreams.pool.health_check]
path = "/healthz"
interval_ms = 100
"#,
        peers(&[a.addr, b.addr])
    ))
    .await;

    // Both healthy: both get traffic.
    let (to_a, to_b) = spread(&edge, 10).await;
    assert!(to_a > 0 && to_b > 0, "healthy spread {to_a}/{to_b}");

    b.set_healthy(false);
    eventually(
        "b to be ejected (20 requests in a row on a)",
        200,
        Duration::from_millis(50),
        || async { spread(&edge, 20).await.1 == 0 },
    )
    .await;
    // Still ejected: its check keeps failing.
    let before = b.requests();
    assert_eq!(spread(&edge, 20).await, (20, 0));
    assert_eq!(b.requests(), before);

    b.set_healthy(true);
    eventually(
        "b to get traffic again",
        200,
        Duration::from_millis(50),
        || async { spread(&edge, 10).await.1 > 0 },
    )
    .await;
    edge.stop().await;
}
