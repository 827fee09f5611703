//! Drives the app of `examples/axum.rs` in process (`oneshot`, no sockets) and checks that
//! each of its three admission layers acts.

#[allow(dead_code)]
#[path = "../examples/axum.rs"]
mod example;

use agentgate_middleware::priority_queue::{OverloadReason, Overloaded, PriorityQueuePolicy};
use agentgate_middleware::rate_limit::{KeyKind, RateLimitPolicy, RateLimited};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Request, Response, StatusCode, header};
use example::{App, Settings, app};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// Settings for the tests: a burst of 2 per `x-api-key`, one request in flight.
fn settings(max_queue: usize) -> Settings {
    Settings {
        rate_limit: RateLimitPolicy {
            per_second: 1,
            burst: Some(2),
            key: KeyKind::Header,
            key_header: Some("x-api-key".to_owned()),
            ..RateLimitPolicy::default()
        },
        priority_queue: PriorityQueuePolicy {
            max_in_flight: 1,
            max_queue,
            max_wait_ms: 5_000,
            ..PriorityQueuePolicy::default()
        },
        ..Settings::default()
    }
}

async fn send(router: &Router, req: Request<Body>) -> Response<Body> {
    router.clone().oneshot(req).await.expect("infallible")
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).expect("request")
}

fn get_with(path: &str, name: &str, value: &str) -> Request<Body> {
    Request::get(path)
        .header(name, value)
        .body(Body::empty())
        .expect("request")
}

async fn body(response: Response<Body>) -> Bytes {
    response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
}

#[tokio::test]
async fn existing_user_passes_and_is_cached() {
    let App { router, users, .. } = app(&settings(0));
    for _ in 0..2 {
        let response = send(&router, get("/users/alice")).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            body(response).await,
            "hello, alice (existence cache vouched: true)\n"
        );
    }
    // The second answer came from the cache: the backend was asked once.
    assert_eq!(users.checks(), 1);
}

#[tokio::test]
async fn missing_user_gets_the_cache_404_json() {
    let App { router, users, .. } = app(&settings(0));
    let response = send(&router, get("/users/mallory")).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    assert_eq!(
        body(response).await,
        r#"{"error":{"code":"user_not_found","message":"no such user"}}"#
    );
    assert_eq!(users.checks(), 1);
    // The miss is cached too (negative TTL 1 s).
    assert_eq!(
        send(&router, get("/users/mallory")).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(users.checks(), 1);
    // An unknown route is axum's own 404: empty body, no check.
    let response = send(&router, get("/nope")).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(body(response).await.is_empty());
    assert_eq!(users.checks(), 1);
}

#[tokio::test]
async fn over_the_rate_limit_gets_429_with_retry_after() {
    let App { router, users, .. } = app(&settings(0));
    for remaining in ["1", "0"] {
        let response = send(&router, get_with("/users/alice", "x-api-key", "k1")).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["ratelimit-limit"], "2");
        assert_eq!(response.headers()["ratelimit-remaining"], remaining);
        body(response).await;
    }
    let checks = users.checks();

    let response = send(&router, get_with("/users/alice", "x-api-key", "k1")).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    assert_eq!(response.headers()["ratelimit-remaining"], "0");
    assert!(response.extensions().get::<RateLimited>().is_some());
    assert_eq!(
        body(response).await,
        r#"{"error":{"code":"rate_limited","message":"too many requests, retry later"}}"#
    );
    // Rejected before the existence cache: even a missing user gets 429, unchecked.
    let response = send(&router, get_with("/users/mallory", "x-api-key", "k1")).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(users.checks(), checks);

    // Other keys have their own bucket; requests without a key are not limited.
    let response = send(&router, get_with("/", "x-api-key", "k2")).await;
    assert_eq!(response.status(), StatusCode::OK);
    body(response).await; // frees the priority-queue slot (max_in_flight = 1)
    for _ in 0..5 {
        let response = send(&router, get("/")).await;
        assert_eq!(response.status(), StatusCode::OK);
        body(response).await;
    }
}

#[tokio::test]
async fn priority_queue_admits_and_holds_the_slot_until_the_body_ends() {
    let App { router, queue, .. } = app(&settings(0));
    assert_eq!(queue.in_flight(), (0, 0));
    let response = send(&router, get_with("/", "x-priority", "5")).await;
    assert_eq!(response.status(), StatusCode::OK);
    // The response body carries the one slot (max_in_flight = 1).
    assert_eq!(queue.in_flight(), (1, 0));

    // No queue (max_queue = 0): a second request is turned away at once.
    let rejected = send(&router, get("/")).await;
    assert_eq!(rejected.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(rejected.headers()[header::RETRY_AFTER], "1");
    assert_eq!(
        rejected.extensions().get::<Overloaded>(),
        Some(&Overloaded {
            reason: OverloadReason::QueueFull
        })
    );

    assert_eq!(body(response).await, "hello\n");
    assert_eq!(queue.in_flight(), (0, 0));
    let response = send(&router, get("/")).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn priority_queue_queues_a_request_until_a_slot_frees() {
    let App { router, queue, .. } = app(&settings(1));
    let first = send(&router, get("/")).await;
    assert_eq!(queue.in_flight(), (1, 0));

    let waiting = tokio::spawn({
        let router = router.clone();
        async move { send(&router, get_with("/users/bob", "x-priority", "9")).await }
    });
    while queue.queued() != (1, 0) {
        tokio::task::yield_now().await;
    }
    assert!(!waiting.is_finished());

    drop(first); // frees the slot: the waiter is admitted
    let response = waiting.await.expect("task");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(queue.queued(), (0, 0));
    assert_eq!(
        body(response).await,
        "hello, bob (existence cache vouched: true)\n"
    );
    assert_eq!(queue.in_flight(), (0, 0));
}
