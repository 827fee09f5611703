//! A per-route priority queue through the gateway: under overload the important request
//! waits and succeeds while the unimportant one is shed with 503 and `Retry-After`, and the
//! queue slot is held until the proxied response has been sent; `/metrics` shows the shed
//! and the wait. Clients do not choose their own priority: `x-priority` counts only from a
//! trusted proxy (clamped to 0-9) and is removed before the origin otherwise; an API key can
//! have a priority; `Accept: text/event-stream` does not move a request into the stream
//! budget.

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
trusted_proxies = ["127.0.0.1"]
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

/// An origin that holds `GET /held` until released and answers everything else at once.
async fn holding_origin() -> (Origin, Arc<Notify>) {
    let release = Arc::new(Notify::new());
    let gate = Arc::clone(&release);
    let origin = Origin::with_handler(move |req| {
        let gate = Arc::clone(&gate);
        let held = req.uri().path() == "/held";
        Box::pin(async move {
            if held {
                gate.notified().await;
            }
            text(StatusCode::OK, "done")
        })
    })
    .await;
    (origin, release)
}

/// `/metrics` routed to the agent API, everything else to `origin` with one slot and one
/// queue place, plus `queue` (extra `[routes.priority_queue]` keys).
async fn one_slot_edge(origin: &Origin, queue: &str) -> Edge {
    Edge::from_toml(&format!(
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
{queue}
[upstreams.origin]
peers = [{}]
"#,
        peers(&[origin.addr])
    ))
    .await
}

/// The value of the `/metrics` series `series` (0 if absent).
async fn metric(edge: &Edge, series: &str) -> f64 {
    let metrics = edge
        .client
        .send_call(edge.client.get("/metrics"))
        .await
        .text;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Releases the origin until `tasks` are done; bounded.
async fn release_until_done(
    release: &Notify,
    tasks: &[&tokio::task::JoinHandle<crate::client::Reply>],
) {
    for _ in 0..2000 {
        if tasks.iter().all(|t| t.is_finished()) {
            return;
        }
        release.notify_waiters();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn an_untrusted_x_priority_is_ignored_and_never_reaches_the_origin() {
    let (origin, release) = holding_origin().await;
    let edge = one_slot_edge(&origin, "default_priority = 1").await;

    // A takes the only slot, claiming 255.
    let client = edge.client.clone();
    let first = tokio::spawn(async move {
        client
            .send_call(client.get("/held").header("x-priority", "255"))
            .await
    });
    eventually(
        "A reaches the origin",
        200,
        Duration::from_millis(20),
        || async { origin.requests() == 1 },
    )
    .await;
    // B (no header) takes the queue place.
    let client = edge.client.clone();
    let waiting = tokio::spawn(async move { client.send_call(client.get("/held")).await });
    eventually("B waits", 200, Duration::from_millis(20), || async {
        metric(&edge, r#"agentgate_queue_depth{route="web",priority="1"}"#).await == 1.0
    })
    .await;
    // C claims 255 too: it is not trusted, so it is as important as B and cannot evict it.
    let claimed = edge
        .client
        .send_call(edge.client.get("/held").header("x-priority", "255"))
        .await;
    assert_eq!(
        claimed.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        claimed.text
    );
    assert_eq!(claimed.error_code(), "overloaded");
    assert_eq!(
        metric(
            &edge,
            r#"agentgate_queue_shed_total{route="web",priority="1",reason="queue_full"}"#
        )
        .await,
        1.0
    );

    release_until_done(&release, &[&first, &waiting]).await;
    assert_eq!(first.await.expect("A").status, StatusCode::OK);
    let waited = waiting.await.expect("B");
    assert_eq!(
        (waited.status, waited.text.as_str()),
        (StatusCode::OK, "done")
    );
    // The origin never saw the client's claim.
    let seen = origin.seen();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter().all(|req| req.header("x-priority").is_none()),
        "{seen:?}"
    );
    edge.stop().await;
}

/// The fingerprint `[auth] api_keys` gives `key`: 16 hex digits of its SHA-256.
fn fingerprint(key: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(key)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn a_trusted_proxy_sets_a_clamped_priority_and_an_api_key_has_its_own() {
    let (origin, release) = holding_origin().await;
    let edge = one_slot_edge(
        &origin,
        &format!(
            "trusted_proxies = [\"127.0.0.1\"]\napi_key_priorities = {{ \"{}\" = 7 }}",
            fingerprint(crate::edge::KEY)
        ),
    )
    .await;
    let client = edge.client.clone();
    let first = tokio::spawn(async move { client.send_call(client.get("/held")).await });
    eventually(
        "A reaches the origin",
        200,
        Duration::from_millis(20),
        || async { origin.requests() == 1 },
    )
    .await;
    // B: the API key's priority, 7.
    let client = edge.client.clone();
    let keyed = tokio::spawn(async move {
        client
            .send_call(client.get("/held").bearer(crate::edge::KEY))
            .await
    });
    eventually("B waits at 7", 200, Duration::from_millis(20), || async {
        metric(&edge, r#"agentgate_queue_depth{route="web",priority="7"}"#).await == 1.0
    })
    .await;
    // C: the trusted proxy says 255, which counts as 9 and evicts B.
    let client = edge.client.clone();
    let proxied = tokio::spawn(async move {
        client
            .send_call(client.get("/held").header("x-priority", "255"))
            .await
    });
    let evicted = keyed.await.expect("B");
    assert_eq!(
        evicted.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        evicted.text
    );
    assert_eq!(evicted.error_code(), "overloaded");

    release_until_done(&release, &[&first, &proxied]).await;
    assert_eq!(first.await.expect("A").status, StatusCode::OK);
    assert_eq!(proxied.await.expect("C").status, StatusCode::OK);
    assert_eq!(
        metric(
            &edge,
            r#"agentgate_queue_wait_seconds_count{route="web",priority="9"}"#
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &edge,
            r#"agentgate_queue_shed_total{route="web",priority="7",reason="evicted"}"#
        )
        .await,
        1.0
    );
    // A trusted proxy's header is passed on as it came.
    let seen = origin.seen();
    assert_eq!(
        seen.last().and_then(|r| r.header("x-priority")),
        Some("255")
    );
    edge.stop().await;
}

#[tokio::test]
async fn accept_event_stream_does_not_move_a_request_into_the_stream_budget() {
    let (origin, release) = holding_origin().await;
    let edge = Edge::from_toml(&format!(
        r#"
[[routes]]
name = "web"
kind = "upstream"
path_prefix = "/"
upstream = "origin"
[routes.priority_queue]
max_in_flight = 1
max_queue = 0
stream_budget = 1
[upstreams.origin]
peers = [{}]
"#,
        peers(&[origin.addr])
    ))
    .await;
    let client = edge.client.clone();
    let first = tokio::spawn(async move { client.send_call(client.get("/held")).await });
    eventually(
        "A reaches the origin",
        200,
        Duration::from_millis(20),
        || async { origin.requests() == 1 },
    )
    .await;
    // The main budget is full; asking for an event stream does not get around it...
    let sneaky = edge
        .client
        .send_call(
            edge.client
                .get("/api")
                .header("accept", "text/event-stream"),
        )
        .await;
    assert_eq!(
        sneaky.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        sneaky.text
    );
    assert_eq!(sneaky.error_code(), "overloaded");
    // ...while a GET of a stream path uses the stream budget.
    let stream = edge
        .client
        .send_call(edge.client.get("/events/stream"))
        .await;
    assert_eq!(stream.status, StatusCode::OK, "{}", stream.text);
    release_until_done(&release, &[&first]).await;
    assert_eq!(first.await.expect("A").status, StatusCode::OK);
    edge.stop().await;
}
