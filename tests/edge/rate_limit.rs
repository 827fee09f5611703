//! Per-route rate limits from TOML, through the gateway: a limited key gets 429 with
//! `Retry-After` and `RateLimit-*` headers, other keys are untouched, and a limited upstream
//! request never reaches the origin; `/metrics` counts the rejections per route.

use http::StatusCode;

use crate::edge::{Edge, peers};
use crate::origin::Origin;

#[tokio::test]
async fn a_limited_key_gets_429_with_retry_after_and_others_pass() {
    let origin = Origin::start("origin").await;
    let edge = Edge::from_toml(&format!(
        r#"
[[routes]]
name = "ops"
kind = "agent"
path_prefix = "/metrics"
[[routes]]
name = "agent"
kind = "agent"
path_prefix = "/healthz"
[routes.rate_limit]
per_second = 1
burst = 2
key = "header"
key_header = "x-api-key"
[[routes]]
name = "web"
kind = "upstream"
path_prefix = "/"
upstream = "origin"
[routes.rate_limit]
per_second = 1
burst = 2
key = "peer_ip"
[upstreams.origin]
peers = [{}]
"#,
        peers(&[origin.addr])
    ))
    .await;
    let client = &edge.client;

    // Agent route, keyed by header: the burst passes, then 429; another key is untouched.
    for _ in 0..2 {
        let reply = client
            .send_call(client.get("/healthz").header("x-api-key", "k1"))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert_eq!(reply.header("ratelimit-limit"), Some("2"));
    }
    let limited = client
        .send_call(client.get("/healthz").header("x-api-key", "k1"))
        .await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        limited.text
    );
    assert_eq!(limited.error_code(), "rate_limited");
    // One cell comes back per second: the next request is allowed within one second.
    assert_eq!(limited.header("retry-after"), Some("1"));
    assert_eq!(limited.header("ratelimit-remaining"), Some("0"));
    let other = client
        .send_call(client.get("/healthz").header("x-api-key", "k2"))
        .await;
    assert_eq!(other.status, StatusCode::OK);

    // Upstream route, keyed by peer IP: the third request is answered by the gateway and
    // never reaches the origin.
    for _ in 0..2 {
        assert_eq!(
            client.send_call(client.get("/page")).await.status,
            StatusCode::OK
        );
    }
    let limited = client.send_call(client.get("/page")).await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        limited.text
    );
    assert_eq!(limited.header("retry-after"), Some("1"));
    assert_eq!(origin.requests(), 2);

    // Each route counted its own rejection.
    let metrics = client.send_call(client.get("/metrics")).await.text;
    for route in ["agent", "web"] {
        let series = format!("agentgate_rate_limited_total{{route=\"{route}\"}} 1");
        assert!(
            metrics.lines().any(|l| l == series),
            "{series} in\n{metrics}"
        );
    }
    edge.stop().await;
}
