//! Unit tests: paused tokio time, an inner service reporting which request it started on a
//! channel; order is set by the order of `call`, which places the request synchronously.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::sync::mpsc;
use tower::{Service, ServiceExt, service_fn};

use super::*;

type Inner = tower::util::BoxCloneService<Request<()>, Response<Full<Bytes>>, Infallible>;
type Svc<C> = PriorityQueue<Inner, C>;
type Reply = Response<ResponseBody<Full<Bytes>>>;

/// The service under test, and the ids (`x-id`) of requests in the order they started.
fn started<C: Clone>(
    policy: &PriorityQueuePolicy,
    classifier: C,
) -> (
    Svc<C>,
    PriorityQueueLayer<C>,
    mpsc::UnboundedReceiver<String>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let inner = service_fn(move |req: Request<()>| {
        let id = req.headers()["x-id"].to_str().unwrap().to_owned();
        tx.send(id).unwrap();
        async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok")))) }
    });
    let layer = PriorityQueueLayer::new(policy, classifier).unwrap();
    (layer.layer(Inner::new(inner)), layer, rx)
}

fn policy(max_in_flight: usize, max_queue: usize) -> PriorityQueuePolicy {
    PriorityQueuePolicy {
        max_in_flight,
        max_queue,
        ..PriorityQueuePolicy::default()
    }
}

fn req(id: &str, priority: u8) -> Request<()> {
    Request::get("/")
        .header("x-id", id)
        .header("x-priority", priority.to_string())
        .body(())
        .unwrap()
}

/// Calls the service (placing the request now) and runs the response future as a task.
async fn spawn<S>(svc: &mut S, req: Request<()>) -> tokio::task::JoinHandle<Reply>
where
    S: Service<Request<()>, Response = Reply, Error = Infallible>,
    S::Future: Send + 'static,
{
    let future = svc.ready().await.unwrap().call(req);
    tokio::spawn(async move { future.await.unwrap() })
}

/// Lets spawned tasks run until they all wait.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

fn header_priority() -> HeaderPriority {
    HeaderPriority::x_priority(1)
}

fn reason(response: &Reply) -> OverloadReason {
    response.extensions().get::<Overloaded>().unwrap().reason
}

#[tokio::test(start_paused = true)]
async fn fifo_within_a_class_and_higher_class_first() {
    let (mut svc, layer, mut started) = started(&policy(1, 10), header_priority());
    let first = spawn(&mut svc, req("first", 1)).await.await.unwrap();
    assert_eq!(started.recv().await.unwrap(), "first");

    let mut waiting = std::collections::HashMap::new();
    for (id, priority) in [("a", 1), ("b", 1), ("high", 5), ("c", 1), ("higher", 9)] {
        waiting.insert(id, spawn(&mut svc, req(id, priority)).await);
    }
    settle().await;
    assert_eq!(layer.queued(), (5, 0));
    assert!(started.try_recv().is_err());

    drop(first);
    for expected in ["higher", "high", "a", "b", "c"] {
        assert_eq!(started.recv().await.unwrap(), expected);
        // Each runs alone: the next starts only once this response is dropped.
        let response = waiting.remove(expected).unwrap().await.unwrap();
        settle().await;
        assert!(started.try_recv().is_err());
        drop(response);
    }
    assert_eq!(layer.in_flight(), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn slot_held_until_body_ends_or_is_dropped() {
    let (mut svc, layer, mut started) = started(&policy(1, 10), header_priority());
    let mut first = spawn(&mut svc, req("first", 1)).await.await.unwrap();
    started.recv().await.unwrap();
    let second = spawn(&mut svc, req("second", 1)).await;
    let third = spawn(&mut svc, req("third", 1)).await;
    settle().await;
    // Headers arrived, body not read: the slot is still taken.
    assert!(started.try_recv().is_err());
    assert_eq!(layer.in_flight(), (1, 0));

    // Reading the body to its end frees the slot, while the body value still exists.
    let frame = first.body_mut().frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "ok");
    assert_eq!(started.recv().await.unwrap(), "second");

    // Dropping an unread body frees it too.
    let second = second.await.unwrap();
    settle().await;
    assert!(started.try_recv().is_err());
    drop(second);
    assert_eq!(started.recv().await.unwrap(), "third");
    drop(third.await.unwrap());
    assert_eq!(layer.in_flight(), (0, 0));
    drop(first);
}

#[tokio::test(start_paused = true)]
async fn full_queue_evicts_lowest_newest_for_higher_priority() {
    let (mut svc, layer, mut started) = started(&policy(1, 2), header_priority());
    let first = spawn(&mut svc, req("first", 1)).await.await.unwrap();
    started.recv().await.unwrap();
    let old_low = spawn(&mut svc, req("old-low", 1)).await;
    let new_low = spawn(&mut svc, req("new-low", 1)).await;
    let high = spawn(&mut svc, req("high", 5)).await;

    let evicted = new_low.await.unwrap();
    assert_eq!(evicted.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(evicted.headers()["retry-after"], "1");
    assert_eq!(evicted.headers()["content-type"], "application/json");
    assert_eq!(reason(&evicted), OverloadReason::Evicted);
    let body = evicted.into_body().collect().await.unwrap().to_bytes();
    assert!(body.starts_with(br#"{"error":{"code":"overloaded","message":"#));
    assert_eq!(layer.queued(), (2, 0));

    drop(first);
    assert_eq!(started.recv().await.unwrap(), "high");
    drop(high.await.unwrap());
    assert_eq!(started.recv().await.unwrap(), "old-low");
    drop(old_low.await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn full_queue_rejects_a_request_not_more_important() {
    let (mut svc, layer, mut started) = started(&policy(1, 1), header_priority());
    let first = spawn(&mut svc, req("first", 1)).await.await.unwrap();
    started.recv().await.unwrap();
    let waiter = spawn(&mut svc, req("waiter", 3)).await;
    let same = spawn(&mut svc, req("same", 3)).await.await.unwrap();
    assert_eq!(same.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reason(&same), OverloadReason::QueueFull);
    assert_eq!(layer.queued(), (1, 0));

    drop(first);
    assert_eq!(started.recv().await.unwrap(), "waiter");
    assert_eq!(waiter.await.unwrap().status(), StatusCode::OK);
    assert!(started.try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn waiting_past_max_wait_gets_503() {
    let (mut svc, layer, mut started) = started(&policy(1, 10), header_priority());
    let first = spawn(&mut svc, req("first", 1)).await.await.unwrap();
    started.recv().await.unwrap();
    // Paused time jumps to the deadline once every task waits.
    let late = spawn(&mut svc, req("late", 9)).await.await.unwrap();
    assert_eq!(late.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reason(&late), OverloadReason::TimedOut);
    assert_eq!(layer.queued(), (0, 0));

    // The timed-out request left the queue: the slot frees instead of going to it.
    drop(first);
    assert_eq!(layer.in_flight(), (0, 0));
    assert!(started.try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn dropped_waiter_leaves_the_queue() {
    let (mut svc, layer, mut started) = started(&policy(1, 10), header_priority());
    let first = spawn(&mut svc, req("first", 1)).await.await.unwrap();
    started.recv().await.unwrap();
    let gone = svc.ready().await.unwrap().call(req("gone", 1));
    let next = spawn(&mut svc, req("next", 1)).await;
    assert_eq!(layer.queued(), (2, 0));
    drop(gone);
    assert_eq!(layer.queued(), (1, 0));
    drop(first);
    assert_eq!(started.recv().await.unwrap(), "next");
    drop(next.await.unwrap());
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(layer.in_flight(), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn streams_have_their_own_budget() {
    let policy = PriorityQueuePolicy {
        stream_budget: 1,
        ..policy(1, 10)
    };
    let (mut svc, layer, mut started) = started(&policy, AcceptEventStream(Fixed(1)));
    let stream = |id: &str| {
        Request::get("/v2/sessions/s1/stream")
            .header("x-id", id)
            .body(())
            .unwrap()
    };
    let sse = |id: &str| {
        Request::get("/events")
            .header("x-id", id)
            .header("accept", "text/event-stream")
            .body(())
            .unwrap()
    };
    let long = spawn(&mut svc, stream("stream-1")).await.await.unwrap();
    assert_eq!(started.recv().await.unwrap(), "stream-1");
    // A second stream waits for the stream budget...
    let queued_stream = spawn(&mut svc, sse("stream-2")).await;
    settle().await;
    assert!(started.try_recv().is_err());
    assert_eq!(layer.queued(), (0, 1));
    // ...while a short request still runs at once.
    let short = spawn(&mut svc, req("short", 1)).await.await.unwrap();
    assert_eq!(started.recv().await.unwrap(), "short");
    assert_eq!(layer.in_flight(), (1, 1));
    drop(short);

    drop(long);
    assert_eq!(started.recv().await.unwrap(), "stream-2");
    drop(queued_stream.await.unwrap());
    assert_eq!(layer.in_flight(), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn without_stream_budget_streams_share_the_main_one() {
    let (mut svc, layer, mut started) = started(&policy(1, 10), AcceptEventStream(Fixed(1)));
    let long = spawn(
        &mut svc,
        Request::get("/x/stream")
            .header("x-id", "s")
            .body(())
            .unwrap(),
    )
    .await
    .await
    .unwrap();
    started.recv().await.unwrap();
    let short = spawn(&mut svc, req("short", 1)).await;
    settle().await;
    assert!(started.try_recv().is_err());
    assert_eq!(layer.queued(), (1, 0));
    drop(long);
    assert_eq!(started.recv().await.unwrap(), "short");
    drop(short.await.unwrap());
}

#[test]
fn classifiers() {
    let header = header_priority();
    let with = |value: &str| {
        Request::get("/")
            .header("x-priority", value)
            .body(())
            .unwrap()
    };
    assert_eq!(header.classify(&with("7")), 7);
    assert_eq!(header.classify(&with("high")), 1);
    assert_eq!(header.classify(&with("300")), 1);
    assert_eq!(header.classify(&Request::get("/").body(()).unwrap()), 1);
    assert_eq!(Fixed(4).classify(&with("7")), 4);
    assert!(!Fixed(4).is_stream(&Request::get("/stream").body(()).unwrap()));
    let sse = AcceptEventStream(Fixed(0));
    assert!(sse.is_stream(&Request::get("/a/stream").body(()).unwrap()));
    assert!(!sse.is_stream(&Request::get("/a/streams").body(()).unwrap()));
    let accept = Request::get("/")
        .header("accept", "application/json, text/event-stream")
        .body(())
        .unwrap();
    assert!(sse.is_stream(&accept));
}

#[test]
fn policy_defaults_and_validation() {
    let policy: PriorityQueuePolicy = toml::from_str("").unwrap();
    assert_eq!(policy, PriorityQueuePolicy::default());
    assert_eq!(policy.max_in_flight, 64);
    assert_eq!(policy.max_queue, 256);
    assert_eq!(policy.max_wait(), Duration::from_secs(5));
    assert_eq!(policy.default_priority, 1);
    assert_eq!(policy.stream_budget, 0);
    assert!(toml::from_str::<PriorityQueuePolicy>("max_inflight = 3").is_err());
    let zero = PriorityQueuePolicy {
        max_in_flight: 0,
        ..policy
    };
    assert_eq!(
        zero.validate(),
        Err(PolicyError::new("max_in_flight", Problem::Zero))
    );
    assert!(PriorityQueueLayer::from_policy(&zero).is_err());
}

/// Records what a [`QueueObserver`] is told.
#[derive(Default)]
struct Recorder {
    depth: std::sync::Mutex<std::collections::BTreeMap<u8, i64>>,
    waits: std::sync::Mutex<Vec<(u8, Duration)>>,
    sheds: std::sync::Mutex<Vec<(u8, OverloadReason)>>,
}

impl QueueObserver for Recorder {
    fn depth(&self, priority: u8, delta: i64) {
        *self.depth.lock().unwrap().entry(priority).or_default() += delta;
    }

    fn waited(&self, priority: u8, waited: Duration) {
        self.waits.lock().unwrap().push((priority, waited));
    }

    fn shed(&self, priority: u8, reason: OverloadReason) {
        self.sheds.lock().unwrap().push((priority, reason));
    }
}

#[tokio::test(start_paused = true)]
async fn observer_sees_depth_by_priority_waits_and_sheds_by_reason() {
    let recorder = std::sync::Arc::new(Recorder::default());
    let mut queue_policy = policy(1, 2);
    queue_policy.max_wait_ms = 1000;
    let (tx, mut started) = mpsc::unbounded_channel();
    let inner = service_fn(move |req: Request<()>| {
        tx.send(req.headers()["x-id"].to_str().unwrap().to_owned())
            .unwrap();
        async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok")))) }
    });
    let layer = PriorityQueueLayer::new(&queue_policy, header_priority())
        .unwrap()
        .observed(recorder.clone());
    let mut svc = layer.layer(Inner::new(inner));

    let running = spawn(&mut svc, req("running", 5)).await.await.unwrap();
    started.recv().await.unwrap();
    let low = spawn(&mut svc, req("low", 1)).await;
    let mid = spawn(&mut svc, req("mid", 3)).await;
    settle().await;
    assert_eq!(*recorder.depth.lock().unwrap(), [(1, 1), (3, 1)].into());
    // Queue full: a priority-1 arrival is turned away; a priority-7 one evicts "low".
    let full = spawn(&mut svc, req("full", 1)).await.await.unwrap();
    assert_eq!(reason(&full), OverloadReason::QueueFull);
    let high = spawn(&mut svc, req("high", 7)).await;
    assert_eq!(reason(&low.await.unwrap()), OverloadReason::Evicted);
    settle().await;
    assert_eq!(
        *recorder.depth.lock().unwrap(),
        [(1, 0), (3, 1), (7, 1)].into()
    );

    // "high" gets the slot after 300 ms; "mid" then waits past max_wait.
    tokio::time::advance(Duration::from_millis(300)).await;
    drop(running);
    assert_eq!(started.recv().await.unwrap(), "high");
    let high = high.await.unwrap();
    tokio::time::advance(Duration::from_millis(800)).await;
    assert_eq!(reason(&mid.await.unwrap()), OverloadReason::TimedOut);
    drop(high);

    assert_eq!(
        *recorder.waits.lock().unwrap(),
        [(7, Duration::from_millis(300))]
    );
    assert_eq!(
        *recorder.sheds.lock().unwrap(),
        [
            (1, OverloadReason::QueueFull),
            (1, OverloadReason::Evicted),
            (3, OverloadReason::TimedOut)
        ]
    );
    assert!(recorder.depth.lock().unwrap().values().all(|d| *d == 0));
}

fn from_peer(peer: &str, priority: Option<&str>) -> Request<()> {
    let mut builder = Request::get("/").header("x-id", "r");
    if let Some(priority) = priority {
        builder = builder.header("x-priority", priority);
    }
    let mut req = builder.body(()).unwrap();
    let peer: std::net::SocketAddr = peer.parse().unwrap();
    req.extensions_mut().insert(crate::client::PeerAddr(peer));
    req
}

fn trusting_policy() -> PriorityQueuePolicy {
    toml::from_str(
        r#"
        default_priority = 2
        trusted_proxies = ["10.0.0.1"]
        api_key_priorities = { "fp-gold" = 7 }
        "#,
    )
    .unwrap()
}

#[test]
fn policy_priority_believes_the_header_only_from_trusted_proxies_and_clamps_it() {
    let classifier = PolicyPriority::from_policy(&trusting_policy());
    // A client that is not a trusted proxy cannot choose: 255 is ignored, and removed.
    let mut untrusted = from_peer("203.0.113.7:1", Some("255"));
    assert_eq!(classifier.classify(&untrusted), 2);
    classifier.strip(&mut untrusted);
    assert!(untrusted.headers().get("x-priority").is_none());
    // Without a known peer nobody is trusted.
    let mut unknown = Request::get("/")
        .header("x-priority", "9")
        .body(())
        .unwrap();
    assert_eq!(classifier.classify(&unknown), 2);
    classifier.strip(&mut unknown);
    assert!(unknown.headers().get("x-priority").is_none());
    // A trusted proxy's header is believed, clamped to 0..=9, and passed on.
    for (value, expected) in [("4", 4), ("255", 9), ("100000", MAX_PRIORITY), ("0", 0)] {
        let mut trusted = from_peer("10.0.0.1:1", Some(value));
        assert_eq!(classifier.classify(&trusted), expected, "{value}");
        classifier.strip(&mut trusted);
        assert_eq!(trusted.headers()["x-priority"], value);
    }
    // A trusted proxy without a valid header: the client's priority, else the default.
    assert_eq!(
        classifier.classify(&from_peer("10.0.0.1:1", Some("high"))),
        2
    );
    let mut gold = from_peer("203.0.113.7:1", Some("0"));
    gold.extensions_mut()
        .insert(crate::client::ClientIdentity::new("fp-gold"));
    assert_eq!(
        classifier.classify(&gold),
        7,
        "untrusted header, known client"
    );
    let mut other = from_peer("203.0.113.7:1", None);
    other
        .extensions_mut()
        .insert(crate::client::ClientIdentity::new("fp-other"));
    assert_eq!(classifier.classify(&other), 2);
}

#[test]
fn policy_streams_are_decided_by_path_or_route_not_by_accept() {
    let sse = |method: &str, path: &str| {
        Request::builder()
            .method(method)
            .uri(path)
            .header("accept", "text/event-stream")
            .body(())
            .unwrap()
    };
    let rule = |streams: Option<StreamRule>| {
        PolicyPriority::from_policy(&PriorityQueuePolicy {
            streams,
            ..PriorityQueuePolicy::default()
        })
    };
    let path = rule(None);
    assert!(path.is_stream(&sse("GET", "/v2/sessions/s1/stream")));
    assert!(path.is_stream(&sse("GET", "/v2/stream")));
    assert!(!path.is_stream(&sse("GET", "/v2/sessions")), "Accept alone");
    assert!(
        !path.is_stream(&sse("POST", "/x/stream")),
        "only GET streams"
    );
    assert!(rule(Some(StreamRule::All)).is_stream(&sse("POST", "/")));
    assert!(!rule(Some(StreamRule::None)).is_stream(&sse("GET", "/x/stream")));
    assert!(rule(Some(StreamRule::Accept)).is_stream(&sse("POST", "/")));
}

#[test]
fn priorities_above_nine_say_which_key_is_wrong() {
    let high_default = PriorityQueuePolicy {
        default_priority: 10,
        ..PriorityQueuePolicy::default()
    };
    let error = high_default.validate().unwrap_err();
    assert_eq!(error.key(), "default_priority");
    assert_eq!(error.problem(), &Problem::AboveMax { value: 10, max: 9 });
    assert!(error.to_string().contains("at most 9"), "{error}");
    let mut high_client = trusting_policy();
    high_client.api_key_priorities.insert("fp-x".into(), 200);
    let error = PriorityQueueLayer::from_policy(&high_client).unwrap_err();
    assert_eq!(error.key(), "api_key_priorities");
    assert!(
        !error.to_string().contains("fp-x"),
        "clients are not named: {error}"
    );
    assert!(toml::from_str::<PriorityQueuePolicy>(r#"streams = "sometimes""#).is_err());
}

#[tokio::test(start_paused = true)]
async fn the_inner_service_never_sees_an_untrusted_priority_header() {
    let policy = trusting_policy();
    let (tx, mut seen) = mpsc::unbounded_channel();
    let inner = service_fn(move |req: Request<()>| {
        tx.send(req.headers().get("x-priority").cloned()).unwrap();
        async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok")))) }
    });
    let layer = PriorityQueueLayer::from_policy(&policy).unwrap();
    let mut svc = layer.layer(Inner::new(inner));
    drop(
        spawn(&mut svc, from_peer("203.0.113.7:1", Some("255")))
            .await
            .await,
    );
    assert_eq!(seen.recv().await.unwrap(), None);
    drop(
        spawn(&mut svc, from_peer("10.0.0.1:1", Some("3")))
            .await
            .await,
    );
    assert_eq!(seen.recv().await.unwrap().unwrap(), "3");
}
