//! Unit tests: paused tokio time, counting checks, tower-test mocks.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::Notify;
use tower::{Service, ServiceExt, service_fn};

use super::*;

#[derive(Clone)]
struct FirstSegment;

impl crate::KeyExtractor for FirstSegment {
    type Key = String;
    fn extract<B>(&self, req: &Request<B>) -> Option<String> {
        req.uri()
            .path()
            .split('/')
            .nth(1)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    }
}

/// Counts checks; knows a fixed set of keys; can hold checks until released; can fail.
#[derive(Clone, Default)]
struct Check {
    calls: Arc<AtomicUsize>,
    known: Arc<HashSet<String>>,
    gate: Option<Arc<Notify>>,
    fail: bool,
}

impl Check {
    fn knowing(keys: &[&str]) -> Self {
        Self {
            known: Arc::new(keys.iter().map(|k| (*k).to_owned()).collect()),
            ..Self::default()
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl ExistenceCheck<String> for Check {
    type Error = &'static str;

    async fn exists(&self, key: &String) -> Result<bool, &'static str> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(gate) = &self.gate {
            gate.notified().await;
        }
        if self.fail {
            return Err("backend down");
        }
        Ok(self.known.contains(key))
    }
}

/// The inner service: says whether the layer vouched for the key.
async fn echo(req: Request<()>) -> Result<Response<String>, Infallible> {
    let vouched = req.extensions().get::<Exists>().is_some();
    Ok(Response::new(format!("vouched={vouched}")))
}

fn get(path: &str) -> Request<()> {
    Request::get(path).body(()).unwrap()
}

async fn call<S>(svc: &mut S, path: &str) -> (StatusCode, String)
where
    S: Service<Request<()>, Response = Response<ResponseBody<String>>, Error = Infallible>,
{
    let response = svc.ready().await.unwrap().call(get(path)).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

fn policy(positive_ms: u64, negative_ms: u64) -> ExistenceCachePolicy {
    ExistenceCachePolicy {
        positive_ttl_ms: positive_ms,
        negative_ttl_ms: negative_ms,
        ..ExistenceCachePolicy::default()
    }
}

#[tokio::test(start_paused = true)]
async fn hits_are_cached_until_the_positive_ttl() {
    let check = Check::knowing(&["alice"]);
    let layer = ExistenceCacheLayer::new(FirstSegment, check.clone(), policy(5_000, 0));
    let mut svc = layer.layer(service_fn(echo));
    assert_eq!(
        call(&mut svc, "/alice").await,
        (StatusCode::OK, "vouched=true".into())
    );
    assert_eq!(call(&mut svc, "/alice/x").await.0, StatusCode::OK);
    assert_eq!(check.calls(), 1, "second request served from the cache");
    tokio::time::advance(Duration::from_millis(5_001)).await;
    assert_eq!(call(&mut svc, "/alice").await.0, StatusCode::OK);
    assert_eq!(check.calls(), 2, "expired entry checked again");
}

#[tokio::test(start_paused = true)]
async fn misses_answer_404_without_calling_the_service() {
    let check = Check::knowing(&[]);
    let layer = ExistenceCacheLayer::new(FirstSegment, check.clone(), policy(5_000, 1_000));
    let (mock, mut handle) = tower_test::mock::pair::<Request<()>, Response<String>>();
    let mut svc = layer.layer(mock.map_err(|_| -> Infallible { unreachable!("mock failed") }));
    handle.allow(1);
    let response = svc.ready().await.unwrap().call(get("/bob")).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        &body[..],
        br#"{"error":{"code":"not_found","message":"not found"}}"#
    );
    // Cached miss: no second check; and the mock never saw a request.
    let again = svc.ready().await.unwrap().call(get("/bob")).await.unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    assert_eq!(check.calls(), 1);
    assert!(
        futures_poll_none(&mut handle).await,
        "inner service was called"
    );
}

/// True when the mock handle has no pending request.
async fn futures_poll_none(
    handle: &mut tower_test::mock::Handle<Request<()>, Response<String>>,
) -> bool {
    tokio::time::timeout(Duration::from_millis(10), handle.next_request())
        .await
        .is_err()
}

#[tokio::test(start_paused = true)]
async fn zero_negative_ttl_never_caches_a_miss() {
    let check = Check::knowing(&[]);
    let layer = ExistenceCacheLayer::new(FirstSegment, check.clone(), policy(5_000, 0));
    let mut svc = layer.layer(service_fn(echo));
    for _ in 0..3 {
        assert_eq!(call(&mut svc, "/bob").await.0, StatusCode::NOT_FOUND);
    }
    assert_eq!(check.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn concurrent_requests_for_one_key_share_one_check() {
    let gate = Arc::new(Notify::new());
    let check = Check {
        gate: Some(Arc::clone(&gate)),
        ..Check::knowing(&["alice"])
    };
    let layer = ExistenceCacheLayer::new(FirstSegment, check.clone(), policy(5_000, 0));
    let svc = layer.layer(service_fn(echo));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let mut svc = svc.clone();
            tokio::spawn(async move { call(&mut svc, "/alice").await })
        })
        .collect();
    // Let every task reach the cache, then release the one check.
    while check.calls() == 0 {
        tokio::task::yield_now().await;
    }
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    gate.notify_waiters();
    for task in tasks {
        assert_eq!(task.await.unwrap().0, StatusCode::OK);
    }
    assert_eq!(check.calls(), 1, "100 concurrent requests, one check");
}

#[tokio::test(start_paused = true)]
async fn check_errors_pass_through_or_answer_503() {
    let failing = Check {
        fail: true,
        ..Check::default()
    };
    let pass = ExistenceCacheLayer::new(FirstSegment, failing.clone(), policy(5_000, 1_000));
    let mut svc = pass.layer(service_fn(echo));
    assert_eq!(
        call(&mut svc, "/alice").await,
        (StatusCode::OK, "vouched=false".into())
    );
    assert_eq!(call(&mut svc, "/alice").await.0, StatusCode::OK);
    assert_eq!(failing.calls(), 2, "errors are not cached");

    let unavailable = ExistenceCachePolicy {
        on_error: OnError::Unavailable,
        ..policy(5_000, 1_000)
    };
    let layer = ExistenceCacheLayer::new(FirstSegment, failing, unavailable);
    let response = layer
        .layer(service_fn(echo))
        .oneshot(get("/alice"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
}

#[tokio::test(start_paused = true)]
async fn requests_without_a_key_are_not_checked() {
    let check = Check::knowing(&[]);
    let layer = ExistenceCacheLayer::new(FirstSegment, check.clone(), policy(5_000, 1_000));
    let mut svc = layer.layer(service_fn(echo));
    assert_eq!(
        call(&mut svc, "/").await,
        (StatusCode::OK, "vouched=false".into())
    );
    assert_eq!(check.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn size_is_bounded_and_keys_can_be_invalidated() {
    let check = Check::knowing(&["a", "b", "c"]);
    let bounded = ExistenceCachePolicy {
        max_entries: 2,
        ..policy(60_000, 60_000)
    };
    let layer = ExistenceCacheLayer::new(FirstSegment, check.clone(), bounded);
    let mut svc = layer.layer(service_fn(echo));
    for key in ["/a", "/b", "/c"] {
        call(&mut svc, key).await;
    }
    assert_eq!(layer.cache().len(), 2, "oldest evicted");
    call(&mut svc, "/a").await;
    assert_eq!(check.calls(), 4, "evicted key checked again");
    layer.cache().invalidate(&"c".to_owned());
    call(&mut svc, "/c").await;
    assert_eq!(check.calls(), 5, "invalidated key checked again");
}

#[tokio::test(start_paused = true)]
async fn a_configured_not_found_message_is_escaped_into_valid_json() {
    let check = Check::knowing(&[]);
    let not_found = NotFound {
        code: "gone",
        message: "no \"session\" here\\",
    };
    let layer =
        ExistenceCacheLayer::new(FirstSegment, check, policy(5_000, 1_000)).not_found(not_found);
    let mut svc = layer.layer(service_fn(echo));
    let response = svc.ready().await.unwrap().call(get("/bob")).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        &body[..],
        br#"{"error":{"code":"gone","message":"no \"session\" here\\"}}"#
    );
}
