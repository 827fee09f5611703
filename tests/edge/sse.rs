//! SSE is not buffered, through either route kind: the next event is produced only after
//! the client has received the previous one, so a proxy that holds events back deadlocks
//! into the test's bounded wait. An `sse` route shares one upstream stream among its viewers
//! that present the same credentials (or among all, with `share = "public"`), and never
//! hands one viewer another's per-client response headers.

use std::sync::Arc;

use http::StatusCode;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::edge::{Edge, KEY};
use crate::origin::{Origin, channel_body, event_stream, two_part_stream};

#[tokio::test]
async fn sse_through_an_upstream_route_is_unbuffered() {
    // The origin sends event 1, then waits for the test to have read it before event 2.
    let received_first = Arc::new(Notify::new());
    let origin = Origin::with_handler(two_part_stream("tick", Arc::clone(&received_first))).await;
    let edge = Edge::proxying_to(origin.addr).await;

    let mut stream = edge
        .client
        .stream(edge.client.get("/events"))
        .await
        .unwrap_or_else(|r| panic!("stream refused: {} {}", r.status, r.text));
    let first = stream.next_event().await.expect("event 1");
    assert_eq!(first.data.as_deref(), Some("1"));
    received_first.notify_one();
    let second = stream.next_event().await.expect("event 2");
    assert_eq!(second.data.as_deref(), Some("2"));
    stream.expect_end().await;
    drop(stream);
    edge.stop().await;
}

/// `POST path` with a JSON body as [`KEY`]; asserts `status` and returns the answer.
async fn api(edge: &Edge, path: &str, body: &Value, status: StatusCode) -> Value {
    let reply = edge
        .client
        .send_call(edge.client.post(path).bearer(KEY).json(body))
        .await;
    assert_eq!(reply.status, status, "POST {path}: {}", reply.text);
    reply.json
}

#[tokio::test]
async fn sse_through_an_agent_route_is_unbuffered() {
    let edge = Edge::agent_under_v2().await;
    let init = api(&edge, "/v2/sessions", &json!({}), StatusCode::CREATED).await;
    let (id, token) = (
        init["id"].as_str().expect("id"),
        init["stream_token"].as_str().expect("stream_token"),
    );
    let mut stream = edge
        .client
        .stream(
            edge.client
                .get(&format!("/v2/sessions/{id}/stream?token={token}")),
        )
        .await
        .unwrap_or_else(|r| panic!("stream refused: {} {}", r.status, r.text));

    let events = format!("/v2/sessions/{id}/events");
    for n in 1..=2 {
        let delta = json!({"events": [{"kind": "delta", "data": {"n": n}}]});
        api(&edge, &events, &delta, StatusCode::OK).await;
        // Event n+1 is appended only once the client holds event n.
        let frame = stream.next_event().await.expect("a delta event");
        assert_eq!(frame.event.as_deref(), Some("delta"));
        assert_eq!(frame.json()["n"], n);
    }
    let complete = json!({"status": "succeeded", "final_response": {"text": "done"}});
    api(
        &edge,
        &format!("/v2/sessions/{id}/complete"),
        &complete,
        StatusCode::OK,
    )
    .await;
    let last = stream.next_event().await.expect("the complete event");
    assert_eq!(last.event.as_deref(), Some("complete"));
    stream.expect_end().await;
    drop(stream);
    edge.stop().await;
}

/// A `kind = "sse"` route: twenty viewers of one upstream stream cost one upstream request,
/// each gets every event in order, and a viewer reconnecting with a `Last-Event-ID` still in
/// the replay ring is served without another upstream request.
#[tokio::test]
async fn viewers_of_an_upstream_stream_share_one_upstream_request() {
    let (feed_tx, mut feed_rx) = tokio::sync::mpsc::unbounded_channel();
    let origin = Origin::with_handler(move |_req| {
        let feed_tx = feed_tx.clone();
        Box::pin(async move {
            let (tx, body, _dropped) = channel_body();
            let _ = feed_tx.send(tx);
            event_stream(body)
        })
    })
    .await;
    let edge = sse_route(&origin, "").await;
    let client = &edge.client;
    let mut viewers = Vec::new();
    for _ in 0..20 {
        viewers.push(
            client
                .stream(client.get("/feeds/world"))
                .await
                .unwrap_or_else(|r| panic!("{} {}", r.status, r.text)),
        );
    }
    assert_eq!(
        origin.requests(),
        1,
        "one upstream request for twenty viewers"
    );
    let feed = feed_rx.recv().await.expect("the upstream stream");
    for n in 1..=5 {
        let event = format!("id: {n}\nevent: tick\ndata: {{\"n\":{n}}}\n\n");
        feed.send(bytes::Bytes::from(event))
            .await
            .expect("origin body");
    }
    for (i, viewer) in viewers.iter_mut().enumerate() {
        let ids: Vec<Option<String>> = viewer.events(5).await.into_iter().map(|f| f.id).collect();
        let expected: Vec<Option<String>> = (1..=5).map(|n| Some(n.to_string())).collect();
        assert_eq!(ids, expected, "viewer {i}");
    }
    // A reconnect after event 3 is served from the ring.
    let mut back = client
        .stream(client.get("/feeds/world").header("last-event-id", "3"))
        .await
        .unwrap_or_else(|r| panic!("{} {}", r.status, r.text));
    let ids: Vec<Option<String>> = back.events(2).await.into_iter().map(|f| f.id).collect();
    assert_eq!(ids, [Some("4".to_owned()), Some("5".to_owned())]);
    assert_eq!(origin.requests(), 1);
    // Another stream is another upstream request.
    let _other = client
        .stream(client.get("/feeds/sport"))
        .await
        .expect("stream");
    assert_eq!(origin.requests(), 2);
    edge.stop().await;
}

/// An origin whose every stream stays open until the test drops its sender, answering with
/// a per-client `Set-Cookie` that echoes the request's `Cookie`; the senders arrive on the
/// returned channel in request order.
async fn echoing_origin() -> (
    Origin,
    tokio::sync::mpsc::UnboundedReceiver<tokio::sync::mpsc::Sender<bytes::Bytes>>,
) {
    let (feed_tx, feed_rx) = tokio::sync::mpsc::unbounded_channel();
    let origin = Origin::with_handler(move |req| {
        let feed_tx = feed_tx.clone();
        let cookie = req
            .headers()
            .get("cookie")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        Box::pin(async move {
            let (tx, body, _dropped) = channel_body();
            let _ = feed_tx.send(tx);
            let mut response = event_stream(body);
            let echo = http::HeaderValue::from_str(&format!("echo={cookie}")).expect("value");
            response.headers_mut().insert("set-cookie", echo);
            response
        })
    })
    .await;
    (origin, feed_rx)
}

/// A gateway with one `kind = "sse"` route to `origin`, with `extra` route keys.
async fn sse_route(origin: &Origin, extra: &str) -> Edge {
    Edge::from_toml(&format!(
        r#"
[[routes]]
name = "feeds"
kind = "sse"
path_prefix = "/feeds/"
upstream = "news"
{extra}
[upstreams.news]
peers = [{}]
"#,
        crate::edge::peers(&[origin.addr])
    ))
    .await
}

/// Opens `/feeds/world` with `headers`.
async fn view(edge: &Edge, headers: &[(&str, &str)]) -> crate::client::SseStream {
    let mut call = edge.client.get("/feeds/world");
    for (name, value) in headers {
        call = call.header(name, value);
    }
    edge.client
        .stream(call)
        .await
        .unwrap_or_else(|r| panic!("{} {}", r.status, r.text))
}

/// Viewers presenting different credentials (a `Cookie`, or a header the route names) get
/// their own upstream request and their own `Set-Cookie`; a viewer with the same
/// credentials joins, and is not handed the first viewer's `Set-Cookie`.
#[tokio::test]
async fn viewers_share_an_upstream_stream_only_with_equal_credentials() {
    let (origin, mut feeds) = echoing_origin().await;
    let edge = sse_route(&origin, r#"credential_headers = ["x-api-key"]"#).await;

    let mut alice = view(&edge, &[("cookie", "sid=alice")]).await;
    assert_eq!(origin.requests(), 1);
    assert_eq!(
        alice.headers.get("set-cookie").map(|v| v.as_bytes()),
        Some(&b"echo=sid=alice"[..])
    );
    let mut bob = view(&edge, &[("cookie", "sid=bob")]).await;
    assert_eq!(
        origin.requests(),
        2,
        "another cookie, another upstream request"
    );
    let bob_cookies: Vec<_> = bob.headers.get_all("set-cookie").iter().collect();
    assert_eq!(bob_cookies, ["echo=sid=bob"]);
    let mut alice_again = view(&edge, &[("cookie", "sid=alice")]).await;
    assert_eq!(origin.requests(), 2, "the same cookie joins alice's stream");
    assert_eq!(alice_again.headers.get("set-cookie"), None);
    assert_eq!(
        alice_again
            .headers
            .get("content-type")
            .map(|v| v.as_bytes()),
        Some(&b"text/event-stream"[..])
    );
    let _keyed = view(&edge, &[("cookie", "sid=alice"), ("x-api-key", "k1")]).await;
    assert_eq!(origin.requests(), 3, "a named credential header splits too");
    let seen: Vec<Option<String>> = origin
        .seen()
        .iter()
        .map(|s| s.header("x-api-key").map(str::to_owned))
        .collect();
    assert_eq!(seen, [None, None, Some("k1".to_owned())]);

    // Each stream carries its own upstream's events: alice's reaches both alice viewers.
    let alice_feed = feeds.recv().await.expect("alice's upstream stream");
    let bob_feed = feeds.recv().await.expect("bob's upstream stream");
    alice_feed
        .send(bytes::Bytes::from("id: 1\ndata: for-alice\n\n"))
        .await
        .expect("alice's body");
    bob_feed
        .send(bytes::Bytes::from("id: 1\ndata: for-bob\n\n"))
        .await
        .expect("bob's body");
    for viewer in [&mut alice, &mut alice_again] {
        let event = viewer.next_event().await.expect("an event");
        assert_eq!(event.data.as_deref(), Some("for-alice"));
    }
    let event = bob.next_event().await.expect("an event");
    assert_eq!(event.data.as_deref(), Some("for-bob"));
    edge.stop().await;
}

/// `share = "public"`: viewers with different cookies share one upstream request, and the
/// joiner gets the stream's headers but not the first viewer's `Set-Cookie`.
#[tokio::test]
async fn a_public_stream_is_shared_by_everyone_without_per_client_headers() {
    let (origin, mut feeds) = echoing_origin().await;
    let edge = sse_route(&origin, r#"share = "public""#).await;

    let first = view(&edge, &[("cookie", "sid=alice")]).await;
    assert_eq!(
        first.headers.get("set-cookie").map(|v| v.as_bytes()),
        Some(&b"echo=sid=alice"[..])
    );
    let mut second = view(
        &edge,
        &[("cookie", "sid=bob"), ("authorization", "Bearer b")],
    )
    .await;
    assert_eq!(origin.requests(), 1, "one upstream request for both");
    assert_eq!(second.headers.get("set-cookie"), None);
    for name in ["content-type", "cache-control"] {
        assert_eq!(
            second.headers.get(name),
            first.headers.get(name),
            "{name} is replayed"
        );
    }
    let feed = feeds.recv().await.expect("the upstream stream");
    feed.send(bytes::Bytes::from("id: 1\ndata: news\n\n"))
        .await
        .expect("origin body");
    let event = second.next_event().await.expect("an event");
    assert_eq!(event.data.as_deref(), Some("news"));
    drop(first);
    edge.stop().await;
}
