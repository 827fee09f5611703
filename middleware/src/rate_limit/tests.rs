//! Unit tests: governor's fake clock (advanced by hand, never slept), counting and mock
//! inner services.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use governor::clock::FakeRelativeClock;
use http::header::HeaderName;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use std::num::NonZeroU32;
use tower::{Service, ServiceExt, service_fn};

use super::*;
use crate::KeyExtractor;

type Svc<E> = RateLimit<
    tower::util::BoxCloneService<Request<()>, Response<String>, Infallible>,
    E,
    FakeRelativeClock,
>;

/// A layer on `clock` over an inner service counting its calls.
fn counted<E: KeyExtractor>(
    extractor: E,
    quota: Quota,
    clock: &FakeRelativeClock,
) -> (Svc<E>, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let inner = service_fn(move |_req: Request<()>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Infallible>(Response::new(String::from("ok"))) }
    });
    let layer = RateLimitLayer::with_clock(extractor, quota, clock.clone());
    (layer.layer(tower::util::BoxCloneService::new(inner)), calls)
}

fn per_second(rate: u32, burst: u32) -> Quota {
    Quota::of(&policy(rate, burst))
}

fn policy(rate: u32, burst: u32) -> RateLimitPolicy {
    RateLimitPolicy {
        per_second: rate,
        burst: Some(burst),
        ..RateLimitPolicy::default()
    }
}

async fn send<S>(svc: &mut S, req: Request<()>) -> Response<ResponseBody<String>>
where
    S: Service<Request<()>, Response = Response<ResponseBody<String>>, Error = Infallible>,
{
    svc.ready().await.unwrap().call(req).await.unwrap()
}

fn get(path: &str) -> Request<()> {
    Request::get(path).body(()).unwrap()
}

fn with_key(value: &str) -> Request<()> {
    Request::get("/")
        .header("x-api-key", value)
        .body(())
        .unwrap()
}

fn header<'a, B>(response: &'a Response<B>, name: &str) -> &'a str {
    response.headers()[name].to_str().unwrap()
}

#[tokio::test]
async fn burst_then_429_with_retry_after_and_headers() {
    let clock = FakeRelativeClock::default();
    let (mut svc, calls) = counted(GlobalKey, per_second(1, 3), &clock);
    for remaining in ["2", "1", "0"] {
        let ok = send(&mut svc, get("/")).await;
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(header(&ok, "ratelimit-limit"), "3");
        assert_eq!(header(&ok, "ratelimit-remaining"), remaining);
    }
    let limited = send(&mut svc, get("/")).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&limited, "retry-after"), "1");
    assert_eq!(header(&limited, "ratelimit-limit"), "3");
    assert_eq!(header(&limited, "ratelimit-remaining"), "0");
    assert_eq!(header(&limited, "ratelimit-reset"), "1");
    assert_eq!(header(&limited, "content-type"), "application/json");
    assert_eq!(
        limited.extensions().get::<RateLimited>(),
        Some(&RateLimited {
            retry_after: Duration::from_secs(1)
        })
    );
    let body = limited.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        &body[..],
        br#"{"error":{"code":"rate_limited","message":"too many requests, retry later"}}"#
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "the limited request never reached it"
    );
}

#[tokio::test]
async fn retry_after_is_rounded_up_to_whole_seconds() {
    let clock = FakeRelativeClock::default();
    // One request every 20 s.
    let quota =
        governor::Quota::per_minute(NonZeroU32::new(3).unwrap()).allow_burst(NonZeroU32::MIN);
    let (mut svc, _) = counted(GlobalKey, quota.into(), &clock);
    assert_eq!(send(&mut svc, get("/")).await.status(), StatusCode::OK);
    let limited = send(&mut svc, get("/")).await;
    assert_eq!(header(&limited, "retry-after"), "20");
    clock.advance(Duration::from_millis(500));
    assert_eq!(header(&send(&mut svc, get("/")).await, "retry-after"), "20");
    clock.advance(Duration::from_millis(19_000));
    let limited = send(&mut svc, get("/")).await;
    assert_eq!(header(&limited, "retry-after"), "1", "0.5 s rounds up to 1");
    assert_eq!(header(&limited, "ratelimit-reset"), "1");
    clock.advance(Duration::from_millis(500));
    assert_eq!(send(&mut svc, get("/")).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn capacity_comes_back_as_the_clock_advances() {
    let clock = FakeRelativeClock::default();
    let (mut svc, calls) = counted(GlobalKey, per_second(2, 2), &clock);
    send(&mut svc, get("/")).await;
    send(&mut svc, get("/")).await;
    assert_eq!(
        send(&mut svc, get("/")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    clock.advance(Duration::from_millis(500));
    let ok = send(&mut svc, get("/")).await;
    assert_eq!(ok.status(), StatusCode::OK, "one request back after 1/rate");
    assert_eq!(header(&ok, "ratelimit-remaining"), "0");
    assert_eq!(
        send(&mut svc, get("/")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    clock.advance(Duration::from_secs(10));
    let ok = send(&mut svc, get("/")).await;
    assert_eq!(
        header(&ok, "ratelimit-remaining"),
        "1",
        "never more than the burst"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn keys_have_independent_buckets() {
    let clock = FakeRelativeClock::default();
    let key = HeaderKey(HeaderName::from_static("x-api-key"));
    let (mut svc, _) = counted(key, per_second(1, 1), &clock);
    assert_eq!(send(&mut svc, with_key("a")).await.status(), StatusCode::OK);
    assert_eq!(
        send(&mut svc, with_key("a")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(send(&mut svc, with_key("b")).await.status(), StatusCode::OK);
    assert_eq!(
        send(&mut svc, with_key("b")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn requests_without_a_key_are_not_limited() {
    let clock = FakeRelativeClock::default();
    let key = HeaderKey(HeaderName::from_static("x-api-key"));
    let (mut svc, calls) = counted(key, per_second(1, 1), &clock);
    for _ in 0..5 {
        let ok = send(&mut svc, get("/")).await;
        assert_eq!(ok.status(), StatusCode::OK);
        assert!(ok.headers().get("ratelimit-limit").is_none());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn limited_requests_never_reach_the_inner_service() {
    let clock = FakeRelativeClock::default();
    let layer = RateLimitLayer::with_clock(GlobalKey, per_second(1, 1), clock);
    let (mock, mut handle) = tower_test::mock::pair::<Request<()>, Response<String>>();
    let mut svc = layer.layer(mock.map_err(|_| -> Infallible { unreachable!("mock failed") }));
    handle.allow(2);
    // The mock receives the request in `call`; answer it before awaiting the response.
    let first = svc.ready().await.unwrap().call(get("/first"));
    let (req, respond) = handle.next_request().await.unwrap();
    assert_eq!(req.uri().path(), "/first");
    respond.send_response(Response::new(String::from("ok")));
    assert_eq!(first.await.unwrap().status(), StatusCode::OK);
    let limited = send(&mut svc, get("/second")).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    drop(svc);
    assert!(handle.next_request().await.is_none(), "no second request");
}

fn from(peer: &str, xff: &[&str]) -> Request<()> {
    let mut req = Request::get("/");
    for value in xff {
        req = req.header("x-forwarded-for", *value);
    }
    let mut req = req.body(()).unwrap();
    let peer: SocketAddr = peer.parse().unwrap();
    req.extensions_mut().insert(PeerAddr(peer));
    req
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn peer_ip_ignores_forwarded_for_from_untrusted_peers() {
    let key = PeerIpKey {
        trusted_proxies: vec![ip("10.0.0.1")],
    };
    let req = from("203.0.113.7:5000", &["198.51.100.1"]);
    assert_eq!(key.extract(&req), Some(ip("203.0.113.7")));
    assert_eq!(key.extract(&get("/")), None, "no PeerAddr, not limited");
}

#[test]
fn peer_ip_takes_the_right_most_untrusted_entry_behind_trusted_proxies() {
    let key = PeerIpKey {
        trusted_proxies: vec![ip("10.0.0.1"), ip("10.0.0.2")],
    };
    // The client forged the left-most entry; 10.0.0.2 forwarded for 198.51.100.9.
    let req = from("10.0.0.1:443", &["6.6.6.6, 198.51.100.9", "10.0.0.2"]);
    assert_eq!(key.extract(&req), Some(ip("198.51.100.9")));
    // Ports and IPv6 are accepted.
    let req = from("10.0.0.1:443", &["[2001:db8::1]:1234"]);
    assert_eq!(key.extract(&req), Some(ip("2001:db8::1")));
    // Every hop trusted: the left-most is the client.
    let req = from("10.0.0.1:443", &["10.0.0.2"]);
    assert_eq!(key.extract(&req), Some(ip("10.0.0.2")));
    // No header: the proxy itself.
    assert_eq!(
        key.extract(&from("10.0.0.1:443", &[])),
        Some(ip("10.0.0.1"))
    );
    // Garbage stops the walk at the last trusted hop.
    let req = from("10.0.0.1:443", &["1.2.3.4, unknown, 10.0.0.2"]);
    assert_eq!(key.extract(&req), Some(ip("10.0.0.2")));
}

#[tokio::test]
async fn peer_ip_keys_clients_behind_a_trusted_proxy_separately() {
    let clock = FakeRelativeClock::default();
    let key = PeerIpKey {
        trusted_proxies: vec![ip("10.0.0.1")],
    };
    let (mut svc, _) = counted(key, per_second(1, 1), &clock);
    let ok = send(&mut svc, from("10.0.0.1:1", &["198.51.100.1"])).await;
    assert_eq!(ok.status(), StatusCode::OK);
    let ok = send(&mut svc, from("10.0.0.1:2", &["198.51.100.2"])).await;
    assert_eq!(ok.status(), StatusCode::OK);
    let limited = send(&mut svc, from("10.0.0.1:3", &["198.51.100.1"])).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    // An untrusted peer cannot pick a fresh key by forging the header.
    let ok = send(&mut svc, from("203.0.113.7:1", &["1.1.1.1"])).await;
    assert_eq!(ok.status(), StatusCode::OK);
    let limited = send(&mut svc, from("203.0.113.7:1", &["2.2.2.2"])).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[test]
fn session_id_key_reads_the_session_an_earlier_layer_named() {
    let mut named = get("/anything");
    named
        .extensions_mut()
        .insert(crate::client::SessionKey(bytes::Bytes::from_static(b"abc")));
    assert_eq!(SessionIdKey.extract(&named), Some(KeyDigest::of(b"abc")));
    // The path means nothing to the middleware.
    assert_eq!(SessionIdKey.extract(&get("/v2/sessions/abc/events")), None);
}

#[tokio::test]
async fn prune_forgets_keys_whose_bucket_is_full_again() {
    let clock = FakeRelativeClock::default();
    let key = HeaderKey(HeaderName::from_static("x-api-key"));
    let layer = RateLimitLayer::with_clock(key, per_second(1, 2), clock.clone());
    let mut svc = layer.layer(service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(String::new()))
    }));
    send(&mut svc, with_key("a")).await;
    send(&mut svc, with_key("b")).await;
    assert_eq!(layer.len(), 2);
    layer.prune();
    assert_eq!(layer.len(), 2, "recently used keys stay");
    clock.advance(Duration::from_secs(5));
    layer.prune();
    assert!(layer.is_empty());
}

#[test]
fn policy_reads_toml_and_builds_its_key() {
    let policy: RateLimitPolicy = toml::from_str(
        r#"
        per_second = 20
        key = "peer_ip"
        trusted_proxies = ["10.0.0.1"]
        "#,
    )
    .unwrap();
    assert_eq!(policy.burst, None);
    let quota = Quota::of(&policy);
    assert_eq!(quota.burst, 20, "burst defaults to per_second");
    assert_eq!(quota.interval, Duration::from_millis(50));
    assert_eq!(Quota::from(quota.to_governor()), quota);
    assert_eq!(
        PolicyKey::from_policy(&policy),
        Ok(PolicyKey::PeerIp(PeerIpKey {
            trusted_proxies: vec![ip("10.0.0.1")]
        }))
    );
    assert_eq!(RateLimitPolicy::default().per_second, 100);
    assert!(toml::from_str::<RateLimitPolicy>("per_secnod = 1").is_err());
    assert!(toml::from_str::<RateLimitPolicy>(r#"key = "cookie""#).is_err());
}

#[test]
fn unusable_policies_say_which_key_is_wrong() {
    let zero = RateLimitPolicy {
        per_second: 0,
        ..RateLimitPolicy::default()
    };
    assert_eq!(
        zero.validate(),
        Err(PolicyError::new("per_second", Problem::Zero))
    );
    assert_eq!(
        RateLimitLayer::from_policy(&zero).unwrap_err(),
        PolicyError::new("per_second", Problem::Zero)
    );
    assert_eq!(
        RateLimitLayer::from_policy(&policy(1, 0)).unwrap_err(),
        PolicyError::new("burst", Problem::Zero)
    );
    let header = RateLimitPolicy {
        key: KeyKind::Header,
        ..RateLimitPolicy::default()
    };
    assert_eq!(
        PolicyKey::from_policy(&header),
        Err(PolicyError::new(
            "key_header",
            Problem::Missing {
                needed_by: "`key = \"header\"`"
            }
        ))
    );
    let bad = RateLimitPolicy {
        key_header: Some("bad header".into()),
        ..header
    };
    assert!(matches!(
        PolicyKey::from_policy(&bad),
        Err(error) if matches!(error.problem(), Problem::Invalid { .. }) && error.key() == "key_header"
    ));
}

#[tokio::test(start_paused = true)]
async fn the_pruner_stops_when_the_layer_is_gone() {
    let layer = RateLimitLayer::new(GlobalKey, per_second(1, 1));
    let pruner = layer.spawn_pruner(Duration::from_secs(60));
    drop(layer);
    tokio::time::advance(Duration::from_secs(61)).await;
    pruner.await.unwrap();
}

fn authorization(value: &[u8]) -> Request<()> {
    let mut req = get("/");
    req.headers_mut().insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_bytes(value).unwrap(),
    );
    req
}

#[test]
fn header_keys_are_normalised_digests() {
    let key = HeaderKey(http::header::AUTHORIZATION);
    let one = key.extract(&authorization(b"Bearer k1")).unwrap();
    for same in [
        &b"bearer k1"[..],
        b"BEARER k1",
        b"Bearer k1 ",
        b" Bearer  k1",
        b"Bearer\tk1",
    ] {
        assert_eq!(key.extract(&authorization(same)), Some(one), "{same:?}");
    }
    // The credential itself is case-sensitive.
    assert_ne!(key.extract(&authorization(b"Bearer K1")), Some(one));
    assert_eq!(key.extract(&authorization(b"   ")), None, "empty: no key");
    // Other headers: trimmed, otherwise byte for byte.
    let tenant = HeaderKey(HeaderName::from_static("x-api-key"));
    assert_eq!(
        tenant.extract(&with_key(" Abc ")),
        tenant.extract(&with_key("Abc"))
    );
    assert_ne!(
        tenant.extract(&with_key("abc")),
        tenant.extract(&with_key("Abc"))
    );
    // Neither the name nor the debug form holds the credential.
    let mut name = String::new();
    LimitKey::Header(one).write_name(&mut name);
    assert!(name.starts_with("h:") && name.len() == 2 + 32, "{name}");
    assert!(!name.contains("k1") && !format!("{one:?}").contains("k1"));
}

#[tokio::test]
async fn spellings_of_one_bearer_key_share_a_bucket() {
    let clock = FakeRelativeClock::default();
    let key = HeaderKey(http::header::AUTHORIZATION);
    let (mut svc, _) = counted(key, per_second(1, 3), &clock);
    for value in [&b"Bearer k1"[..], b"bearer k1", b"BEARER k1 "] {
        assert_eq!(
            send(&mut svc, authorization(value)).await.status(),
            StatusCode::OK
        );
    }
    let limited = send(&mut svc, authorization(b"Bearer  k1")).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn api_key_buckets_by_verified_client_and_unverified_by_ip() {
    let clock = FakeRelativeClock::default();
    let key = ClientKey::default();
    let (mut svc, _) = counted(key.clone(), per_second(1, 1), &clock);
    let client = |id: &str, peer: &str| {
        let mut req = from(peer, &[]);
        req.extensions_mut().insert(ClientIdentity::new(id));
        req
    };
    // One client's bucket follows it across addresses...
    assert_eq!(
        send(&mut svc, client("fp-a", "198.51.100.1:1"))
            .await
            .status(),
        StatusCode::OK
    );
    let limited = send(&mut svc, client("fp-a", "198.51.100.2:1")).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        send(&mut svc, client("fp-b", "198.51.100.1:1"))
            .await
            .status(),
        StatusCode::OK
    );
    // ...and unverified requests share their address's bucket, whatever key they made up.
    let mut anonymous = from("203.0.113.9:1", &[]);
    anonymous
        .headers_mut()
        .insert("authorization", "Bearer made-up-1".parse().unwrap());
    assert_eq!(send(&mut svc, anonymous).await.status(), StatusCode::OK);
    let mut again = from("203.0.113.9:2", &[]);
    again
        .headers_mut()
        .insert("authorization", "Bearer made-up-2".parse().unwrap());
    assert_eq!(
        send(&mut svc, again).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        key.extract(&from("203.0.113.9:2", &[])),
        Some(LimitKey::PeerIp(ip("203.0.113.9")))
    );
    let mut name = String::new();
    LimitKey::Client(ClientIdentity::new("0123456789abcdef")).write_name(&mut name);
    assert_eq!(name, "k:0123456789abcdef");
}

#[tokio::test]
async fn random_keys_never_grow_the_map_past_max_keys_and_a_limited_key_stays_limited() {
    let clock = FakeRelativeClock::default();
    let key = HeaderKey(HeaderName::from_static("x-api-key"));
    let layer = RateLimitLayer::with_clock(key, per_second(1, 5), clock.clone()).max_keys(64);
    let mut svc = layer.layer(service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(String::new()))
    }));
    // The abuser's key uses its whole burst and is over its limit...
    for _ in 0..5 {
        assert_eq!(
            send(&mut svc, with_key("abuser")).await.status(),
            StatusCode::OK
        );
    }
    let limited = send(&mut svc, with_key("abuser")).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    // ...then a flood of made-up keys, each new and each one request in.
    for i in 0..1_000 {
        send(&mut svc, with_key(&format!("random-{i}"))).await;
        assert!(layer.len() <= 64, "{} keys", layer.len());
    }
    let stats = layer.stats();
    assert!(
        stats.keys() <= 64 && stats.evicted() >= 1_000 - 64,
        "{stats:?}"
    );
    // The abuser's bucket, the furthest from full, survived the flood: still limited (an
    // evicted key would start again with a full bucket).
    assert_eq!(
        send(&mut svc, with_key("abuser")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let policy = RateLimitPolicy {
        max_keys: 0,
        ..RateLimitPolicy::default()
    };
    assert_eq!(
        RateLimitLayer::from_policy(&policy).unwrap_err(),
        PolicyError::new("max_keys", Problem::Zero)
    );
}
