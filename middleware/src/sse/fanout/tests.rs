//! Unit tests over an in-test SSE origin: a log of events, a live feed to every open
//! response, and replay after a request's `Last-Event-ID`. (The gateway's tests run the
//! layer over the real agent API and Redis.)

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use tokio::sync::mpsc;
use tower::{Service, ServiceExt, service_fn};

use super::*;

type OriginBody = UnsyncBoxBody<Bytes, Infallible>;

/// The stream every request for `/s` reads: ids 1, 2, 3... Requests for `/missing` get 404.
#[derive(Default)]
struct Origin {
    log: Mutex<Vec<u64>>,
    live: Mutex<Vec<mpsc::UnboundedSender<Bytes>>>,
    calls: Mutex<Vec<Option<String>>>,
}

fn frame(n: u64) -> Bytes {
    Bytes::from(format!("id: {n}\nevent: tick\ndata: {{\"n\":{n}}}\n\n"))
}

impl Origin {
    fn append(&self, n: u64) {
        let mut log = self.log.lock().unwrap();
        log.push(n);
        self.live
            .lock()
            .unwrap()
            .retain(|tx| tx.send(frame(n)).is_ok());
    }

    fn open_streams(&self) -> usize {
        let mut live = self.live.lock().unwrap();
        live.retain(|tx| !tx.is_closed());
        live.len()
    }

    fn calls(&self) -> Vec<Option<String>> {
        self.calls.lock().unwrap().clone()
    }

    fn respond(&self, req: &Request<()>) -> Response<OriginBody> {
        let cursor = req
            .headers()
            .get("last-event-id")
            .map(|v| v.to_str().unwrap().to_owned());
        self.calls.lock().unwrap().push(cursor.clone());
        if req.uri().path() == "/missing" {
            let mut response = Response::new(
                http_body_util::Full::new(Bytes::from("no"))
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            );
            *response.status_mut() = StatusCode::NOT_FOUND;
            return response;
        }
        let after: u64 = cursor.map_or(0, |c| c.parse().unwrap());
        let (tx, rx) = mpsc::unbounded_channel();
        tx.send(Bytes::from_static(b"retry: 1000\n\n")).unwrap();
        // Replay and registration under the log lock: no gap, no duplicate.
        let log = self.log.lock().unwrap();
        for &n in log.iter().filter(|&&n| n > after) {
            tx.send(frame(n)).unwrap();
        }
        self.live.lock().unwrap().push(tx);
        drop(log);
        let body = http_body_util::StreamBody::new(futures_stream(rx));
        let mut response = Response::new(body.boxed_unsync());
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-cache"),
        );
        // Per-client headers: whoever made this call, and only they, may get them.
        headers.insert(
            http::header::SET_COOKIE,
            http::HeaderValue::from_static("sid=for-the-caller"),
        );
        headers.insert(
            http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
            http::HeaderValue::from_static("https://caller.example"),
        );
        response
    }
}

/// An unbounded receiver as a stream of data frames.
fn futures_stream(
    mut rx: mpsc::UnboundedReceiver<Bytes>,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))))
}

type Svc = SseFanout<
    tower::util::BoxCloneService<Request<()>, Response<OriginBody>, Infallible>,
    PathAndCredentials,
>;

fn setup(policy: FanoutPolicy) -> (Arc<Origin>, SseFanoutLayer<PathAndCredentials>, Svc) {
    let origin = Arc::new(Origin::default());
    let serving = Arc::clone(&origin);
    let inner = service_fn(move |req: Request<()>| {
        let response = serving.respond(&req);
        async move { Ok::<_, Infallible>(response) }
    });
    let layer = SseFanoutLayer::new(PathAndCredentials::default(), policy).unwrap();
    let svc = layer.layer(tower::util::BoxCloneService::new(inner));
    (origin, layer, svc)
}

fn get(path: &str, cursor: Option<&str>) -> Request<()> {
    let mut req = Request::get(path);
    if let Some(cursor) = cursor {
        req = req.header("last-event-id", cursor);
    }
    req.body(()).unwrap()
}

async fn open(svc: &mut Svc, path: &str, cursor: Option<&str>) -> Reader {
    let response = svc
        .ready()
        .await
        .unwrap()
        .call(get(path, cursor))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    Reader {
        body: response.into_body(),
        buf: String::new(),
        ids: VecDeque::new(),
    }
}

/// Reads a subscriber's body and splits it into event ids.
struct Reader {
    body: FanoutBody<OriginBody>,
    buf: String,
    ids: VecDeque<u64>,
}

impl Reader {
    /// The next event's id (skipping `retry:` and comments); `None` at the end.
    async fn next_id(&mut self) -> Option<u64> {
        loop {
            if let Some(id) = self.ids.pop_front() {
                return Some(id);
            }
            let frame = tokio::time::timeout(Duration::from_secs(10), self.body.frame())
                .await
                .expect("an event within 10 s")?
                .unwrap();
            self.buf
                .push_str(std::str::from_utf8(&frame.into_data().unwrap()).unwrap());
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                if let Some(id) = block.lines().find_map(|l| l.strip_prefix("id: ")) {
                    self.ids.push_back(id.parse().unwrap());
                }
            }
        }
    }

    async fn expect(&mut self, ids: impl IntoIterator<Item = u64>) {
        for id in ids {
            assert_eq!(self.next_id().await, Some(id));
        }
    }
}

fn policy(ring: usize, queue: usize) -> FanoutPolicy {
    FanoutPolicy {
        replay_ring: ring,
        subscriber_queue: queue,
        linger_ms: 0,
    }
}

#[tokio::test]
async fn concurrent_subscribers_share_one_inner_call_in_order() {
    let (origin, layer, mut svc) = setup(policy(64, 64));
    let mut readers = Vec::new();
    for _ in 0..50 {
        readers.push(open(&mut svc, "/s", None).await);
    }
    assert_eq!(origin.calls().len(), 1);
    for n in 1..=20 {
        origin.append(n);
    }
    for reader in &mut readers {
        reader.expect(1..=20).await;
    }
    let (streams, subscribers, joined, inner_calls, detached) = layer.stats().snapshot();
    assert_eq!((streams, subscribers, joined), (1, 50, 50));
    assert_eq!((inner_calls, detached), (1, 0));
    assert_eq!(origin.open_streams(), 1);
}

#[tokio::test]
async fn late_joiners_inside_the_ring_are_served_from_it_older_ones_read_alone() {
    let (origin, layer, mut svc) = setup(policy(4, 64));
    let mut first = open(&mut svc, "/s", None).await;
    for n in 1..=10 {
        origin.append(n);
    }
    first.expect(1..=10).await;
    // The ring holds 7..=10: a cursor of 8 is served from it, no inner call.
    let mut recent = open(&mut svc, "/s", Some("8")).await;
    assert_eq!(origin.calls().len(), 1);
    // A cursor of 2 is older than the ring: its own call, from 2.
    let mut old = open(&mut svc, "/s", Some("2")).await;
    assert_eq!(origin.calls(), [None, Some("2".to_owned())]);
    // No cursor means "from the start", which the ring no longer holds either.
    let mut fresh = open(&mut svc, "/s", None).await;
    assert_eq!(origin.calls().len(), 3);
    origin.append(11);
    recent.expect(9..=11).await;
    old.expect(3..=11).await;
    fresh.expect(1..=11).await;
    first.expect([11]).await;
    assert_eq!(layer.stats().snapshot().3, 3);
}

#[tokio::test]
async fn a_stalled_subscriber_is_detached_and_later_gets_everything() {
    let (origin, layer, mut svc) = setup(policy(4, 2));
    let mut stalled = open(&mut svc, "/s", None).await;
    let mut reader = open(&mut svc, "/s", None).await;
    // The reader gets all 30 while the stalled one reads nothing: if its full queue made
    // the pump wait, the reader would time out here.
    for n in 1..=30 {
        origin.append(n);
        reader.expect([n]).await;
    }
    assert_eq!(
        layer.stats().snapshot().4,
        1,
        "the stalled subscriber was detached"
    );
    // It drains what it had queued, then continues through its own call: no gap, no dup.
    stalled.expect(1..=30).await;
    origin.append(31);
    stalled.expect([31]).await;
    reader.expect([31]).await;
    let calls = origin.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
}

#[tokio::test(start_paused = true)]
async fn the_shared_call_lingers_after_the_last_subscriber_then_ends() {
    let mut linger = policy(8, 8);
    linger.linger_ms = 5_000;
    let (origin, layer, mut svc) = setup(linger);
    let reader = open(&mut svc, "/s", None).await;
    origin.append(1);
    drop(reader);
    tokio::time::sleep(Duration::from_millis(4_000)).await;
    assert_eq!(layer.streams(), 1, "kept during the linger");
    // A reconnect within the linger joins the same call and resumes from the ring.
    let mut back = open(&mut svc, "/s", Some("1")).await;
    assert_eq!(origin.calls().len(), 1);
    origin.append(2);
    back.expect([2]).await;
    drop(back);
    tokio::time::sleep(Duration::from_millis(5_100)).await;
    assert_eq!(layer.streams(), 0, "dropped after the linger");
    tokio::task::yield_now().await;
    assert_eq!(origin.open_streams(), 0, "the inner stream was dropped");
}

#[tokio::test]
async fn errors_are_not_shared_and_other_keys_get_their_own_stream() {
    let (origin, layer, mut svc) = setup(policy(8, 8));
    for _ in 0..2 {
        let response = svc
            .ready()
            .await
            .unwrap()
            .call(get("/missing", None))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(!response.body().is_shared());
    }
    assert_eq!(origin.calls().len(), 2);
    assert_eq!(layer.streams(), 0);
    // Different credentials are different streams.
    let with_auth = |token: &str| {
        Request::get("/s")
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap()
    };
    for token in ["a", "b"] {
        let response = svc
            .ready()
            .await
            .unwrap()
            .call(with_auth(token))
            .await
            .unwrap();
        assert!(response.body().is_shared());
    }
    assert_eq!(layer.streams(), 2);
    assert_eq!(origin.calls().len(), 4);
}

#[tokio::test]
async fn joiners_get_only_the_replayed_headers_of_the_leader() {
    let (origin, _layer, svc) = setup(policy(64, 64));
    let call = || {
        let svc = svc.clone();
        async move { svc.oneshot(get("/s", None)).await.unwrap() }
    };
    let leader = call().await;
    let joiner = call().await;
    assert_eq!(origin.calls().len(), 1);
    assert!(joiner.body().is_shared());
    // The leader's response is its own, whole.
    assert_eq!(leader.headers()["set-cookie"], "sid=for-the-caller");
    assert!(leader.headers().contains_key("access-control-allow-origin"));
    // The joiner's: the stream's status and describing headers, nothing per-client.
    assert_eq!(joiner.status(), StatusCode::OK);
    let names: Vec<&str> = joiner.headers().keys().map(|n| n.as_str()).collect();
    assert_eq!(names, ["content-type", "cache-control"]);
}
