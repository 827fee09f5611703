//! Per-route rate limits from TOML, through the gateway: a limited key gets 429 with
//! `Retry-After` and `RateLimit-*` headers, other keys are untouched, and a limited upstream
//! request never reaches the origin; `/metrics` counts the rejections per route. Spellings
//! of one bearer key share a bucket, made-up API keys get none of their own, and random
//! keys never grow the key map past `max_keys`.

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

/// `/metrics` routed to the agent API, `/healthz` limited by `limit` (a
/// `[routes.rate_limit]` body).
async fn limited_healthz(limit: &str) -> Edge {
    Edge::from_toml(&format!(
        r#"
[[routes]]
name = "ops"
kind = "agent"
path_prefix = "/metrics"
[[routes]]
name = "limited"
kind = "agent"
path_prefix = "/healthz"
[routes.rate_limit]
{limit}
"#
    ))
    .await
}

async fn healthz_with(edge: &Edge, authorization: &str) -> crate::client::Reply {
    edge.client
        .send_call(
            edge.client
                .get("/healthz")
                .header("authorization", authorization),
        )
        .await
}

fn assert_limited(reply: &crate::client::Reply) {
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        reply.text
    );
    assert_eq!(reply.error_code(), "rate_limited");
    assert_eq!(reply.header("retry-after"), Some("1"));
}

/// Three spellings of the test API key pass a burst of 3; a fourth is limited.
async fn spellings_share_one_bucket(limit_key: &str) {
    let edge = limited_healthz(&format!("per_second = 1\nburst = 3\n{limit_key}")).await;
    let api_key = crate::edge::KEY;
    for spelling in [
        format!("Bearer {api_key}"),
        format!("bearer {api_key}"),
        format!("BEARER {api_key} "),
    ] {
        let reply = healthz_with(&edge, &spelling).await;
        assert_eq!(reply.status, StatusCode::OK, "{spelling:?}: {}", reply.text);
    }
    assert_limited(&healthz_with(&edge, &format!("Bearer  {api_key}")).await);
    edge.stop().await;
}

#[tokio::test]
async fn spellings_of_one_bearer_header_share_a_bucket() {
    spellings_share_one_bucket("key = \"header\"\nkey_header = \"authorization\"").await;
}

#[tokio::test]
async fn spellings_of_one_api_key_share_a_bucket() {
    spellings_share_one_bucket("key = \"api_key\"").await;
}

#[tokio::test]
async fn made_up_api_keys_share_the_client_ips_bucket() {
    let edge = limited_healthz("per_second = 1\nburst = 2\nkey = \"api_key\"").await;
    for i in 0..2 {
        let reply = healthz_with(&edge, &format!("Bearer made-up-{i}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    }
    // A third made-up key is the same client (127.0.0.1): no fresh bucket.
    assert_limited(&healthz_with(&edge, "Bearer made-up-2").await);
    // The real key has its own bucket.
    let real = healthz_with(&edge, &format!("Bearer {}", crate::edge::KEY)).await;
    assert_eq!(real.status, StatusCode::OK, "{}", real.text);
    edge.stop().await;
}

#[tokio::test]
async fn random_keys_never_grow_the_key_map_past_max_keys() {
    let edge = limited_healthz(
        "per_second = 1\nburst = 1\nkey = \"header\"\nkey_header = \"x-api-key\"\nmax_keys = 16",
    )
    .await;
    let client = &edge.client;
    for i in 0..100 {
        let reply = client
            .send_call(
                client
                    .get("/healthz")
                    .header("x-api-key", &format!("random-{i}")),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    }
    let metrics = client.send_call(client.get("/metrics")).await.text;
    let value = |series: &str| -> Option<f64> {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
    };
    let keys = value(r#"agentgate_rate_limit_keys{route="limited"}"#);
    let evicted = value(r#"agentgate_rate_limit_evictions_total{route="limited"}"#);
    assert!(keys.is_some_and(|k| (1.0..=16.0).contains(&k)), "{metrics}");
    assert!(evicted.is_some_and(|e| e >= 84.0), "{metrics}");
    edge.stop().await;
}
