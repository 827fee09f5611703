//! Unit tests of the shared backend of [`RateLimitLayer`] over a scripted [`SharedGcra`] (paused tokio time;
//! the Redis engine itself is tested against a real `redis-server` in the gateway's tests).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tower::{Service, ServiceExt, service_fn};

use super::*;

/// Answers with scripted verdicts (then `Allowed`) and records the keys it was asked about.
#[derive(Default)]
struct Scripted {
    answers: Mutex<VecDeque<Result<Verdict, StoreUnavailable>>>,
    keys: Mutex<Vec<String>>,
}

impl Scripted {
    fn new(answers: impl IntoIterator<Item = Result<Verdict, StoreUnavailable>>) -> Arc<Self> {
        Arc::new(Self {
            answers: Mutex::new(answers.into_iter().collect()),
            keys: Mutex::default(),
        })
    }

    fn keys(&self) -> Vec<String> {
        self.keys.lock().unwrap().clone()
    }
}

impl SharedGcra for Scripted {
    fn check(&self, key: &str, _quota: Quota) -> CheckFuture {
        self.keys.lock().unwrap().push(key.to_owned());
        let answer = self
            .answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Ok(Verdict::Allowed { remaining: 7 }));
        Box::pin(std::future::ready(answer))
    }
}

fn limited(ms: u64) -> Result<Verdict, StoreUnavailable> {
    Ok(Verdict::Limited {
        retry_after: Duration::from_millis(ms),
    })
}

fn down() -> Result<Verdict, StoreUnavailable> {
    Err(StoreUnavailable("connection refused".to_owned()))
}

/// The name of a header key's bucket: `h:` and the value's digest.
fn header_name(value: &str) -> String {
    let mut name = String::new();
    LimitKey::Header(KeyDigest::of(value.as_bytes())).write_name(&mut name);
    name
}

fn policy(toml_text: &str) -> RateLimitPolicy {
    toml::from_str(toml_text).unwrap()
}

type Svc =
    RateLimit<tower::util::BoxCloneService<Request<()>, Response<String>, Infallible>, PolicyKey>;

fn counted(layer: &RateLimitLayer<PolicyKey>) -> (Svc, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let inner = service_fn(move |_req: Request<()>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Infallible>(Response::new(String::from("ok"))) }
    });
    (layer.layer(tower::util::BoxCloneService::new(inner)), calls)
}

async fn send(svc: &mut Svc, key: &str) -> Response<ResponseBody<String>> {
    let req = Request::get("/").header("x-api-key", key).body(()).unwrap();
    svc.ready().await.unwrap().call(req).await.unwrap()
}

fn header<'a, B>(response: &'a Response<B>, name: &str) -> &'a str {
    response.headers()[name].to_str().unwrap()
}

const HEADER_POLICY: &str = r#"
per_second = 10
burst = 20
key = "header"
key_header = "x-api-key"
store = "redis"
"#;

#[tokio::test]
async fn allowed_requests_reach_the_service_with_the_stores_remaining() {
    let gcra = Scripted::new([Ok(Verdict::Allowed { remaining: 19 })]);
    let layer =
        RateLimitLayer::shared_from_policy(&policy(HEADER_POLICY), gcra.clone(), "rl:r1:").unwrap();
    let (mut svc, calls) = counted(&layer);
    let ok = send(&mut svc, "k1").await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(header(&ok, "ratelimit-limit"), "20");
    assert_eq!(header(&ok, "ratelimit-remaining"), "19");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // The key carries the prefix and the extractor's kind, and is checked in the store.
    assert_eq!(gcra.keys(), [format!("rl:r1:{}", header_name("k1"))]);
}

#[tokio::test(start_paused = true)]
async fn a_refused_key_is_refused_locally_until_its_retry_after() {
    let gcra = Scripted::new([limited(1500)]);
    let layer =
        RateLimitLayer::shared_from_policy(&policy(HEADER_POLICY), gcra.clone(), "p:").unwrap();
    let (mut svc, calls) = counted(&layer);

    let refused = send(&mut svc, "abuser").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&refused, "retry-after"), "2");
    assert_eq!(header(&refused, "ratelimit-remaining"), "0");
    assert!(refused.extensions().get::<RateLimited>().is_some());
    let body = refused.into_body().collect().await.unwrap().to_bytes();
    assert!(std::str::from_utf8(&body).unwrap().contains("rate_limited"));

    // Within the window: refused again, no store call; the Retry-After shrinks with time.
    tokio::time::advance(Duration::from_millis(600)).await;
    let again = send(&mut svc, "abuser").await;
    assert_eq!(again.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&again, "retry-after"), "1");
    assert_eq!(gcra.keys().len(), 1);
    // Another key is not affected by the cache.
    assert_eq!(send(&mut svc, "other").await.status(), StatusCode::OK);
    assert_eq!(gcra.keys().len(), 2);

    // Once the window has passed, the store decides again (and allows).
    tokio::time::advance(Duration::from_millis(900)).await;
    assert_eq!(send(&mut svc, "abuser").await.status(), StatusCode::OK);
    let (abuser, other) = (header_name("abuser"), header_name("other"));
    assert_eq!(
        gcra.keys(),
        [
            format!("p:{abuser}"),
            format!("p:{other}"),
            format!("p:{abuser}")
        ]
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    layer.prune();
    assert_eq!(layer.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn without_the_cache_every_refusal_asks_the_store() {
    let gcra = Scripted::new([limited(1000), limited(1000)]);
    let text = format!("{HEADER_POLICY}over_limit_cache = 0\n");
    let layer = RateLimitLayer::shared_from_policy(&policy(&text), gcra.clone(), "p:").unwrap();
    let (mut svc, calls) = counted(&layer);
    for _ in 0..2 {
        let refused = send(&mut svc, "k").await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    assert_eq!(gcra.keys().len(), 2);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(layer.len(), 0);
}

#[tokio::test]
async fn store_down_fails_open_by_default() {
    let gcra = Scripted::new([down()]);
    let layer = RateLimitLayer::shared_from_policy(&policy(HEADER_POLICY), gcra, "p:").unwrap();
    let (mut svc, calls) = counted(&layer);
    let passed = send(&mut svc, "k").await;
    assert_eq!(passed.status(), StatusCode::OK);
    // Nothing is known about the bucket: no RateLimit headers.
    assert!(passed.headers().get("ratelimit-limit").is_none());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(layer.store_errors(), 1);
}

#[tokio::test]
async fn store_down_fails_closed_when_asked() {
    let gcra = Scripted::new([down(), Ok(Verdict::Allowed { remaining: 3 })]);
    let text = format!("{HEADER_POLICY}on_store_error = \"closed\"\n");
    let layer = RateLimitLayer::shared_from_policy(&policy(&text), gcra, "p:").unwrap();
    let (mut svc, calls) = counted(&layer);
    let refused = send(&mut svc, "k").await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&refused, "retry-after"), "1");
    assert!(refused.extensions().get::<RateLimited>().is_none());
    let body = refused.into_body().collect().await.unwrap().to_bytes();
    assert!(
        std::str::from_utf8(&body)
            .unwrap()
            .contains("rate_limit_unavailable")
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // The store is back: the next request goes through.
    assert_eq!(send(&mut svc, "k").await.status(), StatusCode::OK);
    assert_eq!(layer.store_errors(), 1);
}

#[tokio::test]
async fn requests_without_a_key_skip_the_store() {
    let gcra = Scripted::new([]);
    let layer =
        RateLimitLayer::shared_from_policy(&policy(HEADER_POLICY), gcra.clone(), "p:").unwrap();
    let (mut svc, calls) = counted(&layer);
    let req = Request::get("/").body(()).unwrap();
    let ok = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert!(gcra.keys().is_empty());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn policy_quota_becomes_interval_and_burst() {
    let gcra = Scripted::new([]);
    let layer =
        RateLimitLayer::shared_from_policy(&policy(HEADER_POLICY), gcra.clone(), "p:").unwrap();
    let text = format!("{layer:?}");
    assert!(
        text.contains("interval: 100ms") && text.contains("burst: 20"),
        "{text}"
    );
    let zero = policy("per_second = 0");
    assert_eq!(
        RateLimitLayer::shared_from_policy(&zero, gcra, "p:").unwrap_err(),
        PolicyError::new("per_second", Problem::Zero)
    );
}

#[test]
fn header_key_names_are_hex_digests_even_for_opaque_bytes() {
    let mut name = String::new();
    let name_of = |value: &[u8]| {
        KeyDigest::of_header(&http::header::HeaderName::from_static("x-k"), value).unwrap()
    };
    LimitKey::Header(name_of(b"a b%\xff")).write_name(&mut name);
    assert!(name.starts_with("h:"), "{name}");
    assert!(
        name[2..].bytes().all(|b| b.is_ascii_hexdigit()) && name.len() == 34,
        "{name}"
    );
}
