//! Every route kind over HTTP/2 (h2c, prior knowledge; one connection carries every
//! request of a test): the agent API (create, a streamed request body, append, an SSE
//! stream that ends cleanly), a multiplexed stream, an upstream route (a request body
//! streaming in, a large response) and an `sse` route; and HTTP/2 flow control: a response
//! the client does not read does not stall the other streams on its connection.

use bytes::Bytes;
use http::{StatusCode, Version};
use http_body_util::BodyExt;
use serde_json::json;

use crate::client::{Client, within};
use crate::edge::{Edge, KEY, peers};
use crate::origin::{Origin, event_stream, sse_event, text};
use crate::tls::{TestCa, connect, h2_client};

/// Bytes of the large upstream answer: far past HTTP/2's default stream window (64 KiB).
const LARGE: usize = 4 * 1024 * 1024;

async fn origin() -> Origin {
    Origin::with_handler(|req| {
        Box::pin(async move {
            match req.uri().path() {
                "/up/large" => text(StatusCode::OK, vec![b'x'; LARGE]),
                "/up/echo" => {
                    let body = req.into_body().collect().await.map(|b| b.to_bytes());
                    let len = body.map_or(0, |b| b.len());
                    text(StatusCode::OK, format!("read {len}"))
                }
                "/feeds/news" => {
                    let frames: Vec<Bytes> = (0..3)
                        .map(|i| sse_event("news", &format!("{{\"n\":{i}}}")))
                        .collect();
                    event_stream(http_body_util::Full::new(frames.concat().into()).boxed())
                }
                _ => text(StatusCode::OK, "origin"),
            }
        })
    })
    .await
}

async fn edge(origin: &Origin) -> Edge {
    Edge::from_toml(&format!(
        r#"
[server]
h2c = true
[[routes]]
name = "agent"
path_prefix = "/v2/"
[[routes]]
name = "up"
kind = "upstream"
path_prefix = "/up/"
upstream = "origin"
[[routes]]
name = "feeds"
kind = "sse"
path_prefix = "/feeds/"
upstream = "origin"
[upstreams.origin]
peers = [{}]
read_timeout_ms = 0
"#,
        peers(&[origin.addr])
    ))
    .await
}

#[tokio::test]
async fn every_route_kind_answers_over_http2() {
    let origin = origin().await;
    let edge = edge(&origin).await;
    let client = Client::h2c(edge.addr);

    // The agent API: a session, events appended with a body streamed in chunks, a stream.
    let created = client
        .send_call(client.post("/v2/sessions").bearer(KEY).json(&json!({})))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.version, Version::HTTP_2);
    let id = created.json["id"].as_str().expect("id").to_owned();
    let token = created.json["stream_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let stream_url = created.json["stream_url"].as_str().expect("url").to_owned();
    let mut stream = client
        .stream(client.get(&stream_url))
        .await
        .expect("stream");
    assert_eq!(stream.version, Version::HTTP_2);
    stream.expect_retry().await;
    let body = json!({"events": [{"kind": "delta", "data": {"n": 1}}]}).to_string();
    let (head, tail) = body.split_at(body.len() / 2);
    let appended = client
        .send_call(
            client
                .post(&format!("/v2/sessions/{id}/events"))
                .bearer(KEY)
                .chunked_json(vec![
                    Bytes::from(head.to_owned()),
                    Bytes::from(tail.to_owned()),
                ]),
        )
        .await;
    assert_eq!(appended.status, StatusCode::OK, "{}", appended.text);
    let event = stream.next_event().await.expect("the event");
    assert_eq!(event.json(), json!({"n": 1}));

    // A multiplexed stream of the same session.
    let mut multiplexed = client
        .stream(client.get(&format!("/v2/stream?sessions={id}&tokens={token}")))
        .await
        .expect("multiplexed stream");
    assert_eq!(multiplexed.version, Version::HTTP_2);
    let first = multiplexed.next_event().await.expect("a multiplexed event");
    assert_eq!(first.json()["stream"], json!(id));

    // Completing the session ends the stream cleanly (END_STREAM, no reset).
    let completed = client
        .send_call(
            client
                .post(&format!("/v2/sessions/{id}/complete"))
                .bearer(KEY)
                .json(&json!({"status": "succeeded", "final_response": {"ok": true}})),
        )
        .await;
    assert_eq!(completed.status, StatusCode::OK, "{}", completed.text);
    let rest = stream.events_to_end().await;
    assert!(
        rest.iter().any(|f| f.event.as_deref() == Some("complete")),
        "{rest:?}"
    );

    // An upstream route: a body streamed in, a large body out.
    let echoed = client
        .send_call(client.post("/up/echo").chunked_json(vec![
            Bytes::from_static(b"{\"a\":"),
            Bytes::from_static(b"1}"),
        ]))
        .await;
    assert_eq!(echoed.status, StatusCode::OK);
    assert_eq!(echoed.version, Version::HTTP_2);
    assert_eq!(echoed.text, "read 7");
    let large = client.send_call(client.get("/up/large")).await;
    assert_eq!(large.text.len(), LARGE);

    // An sse route.
    let mut feed = client
        .stream(client.get("/feeds/news"))
        .await
        .expect("feed");
    assert_eq!(feed.version, Version::HTTP_2);
    let events = feed.events_to_end().await;
    assert_eq!(events.len(), 3, "{events:?}");
    edge.stop().await;
}

#[tokio::test]
async fn an_unread_response_does_not_stall_the_other_streams_of_its_connection() {
    let origin = origin().await;
    let edge = edge(&origin).await;
    let client = Client::h2c(edge.addr);
    // The first response's body is never read: it fills its stream's window and waits.
    let stalled = client.unread(client.get("/up/large")).await;
    assert_eq!(stalled.status(), StatusCode::OK);
    assert_eq!(stalled.version(), Version::HTTP_2);
    // Streams after it on the same connection are answered whole, again and again; with
    // head-of-line blocking on the connection these would wait forever.
    for _ in 0..3 {
        let reply = client.send_call(client.get("/up/large")).await;
        assert_eq!(reply.text.len(), LARGE);
        let created = client
            .send_call(client.post("/v2/sessions").bearer(KEY).json(&json!({})))
            .await;
        assert_eq!(created.status, StatusCode::CREATED);
    }
    // And the stalled one is still whole once read.
    let body = within("the stalled body", stalled.into_body().collect())
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(body.len(), LARGE);
    edge.stop().await;
}

#[tokio::test]
async fn upstream_requests_from_tls_clients_say_https() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = TestCa::new();
    let cert = ca.issue(dir.path(), "edge", &["127.0.0.1"]);
    let origin = origin().await;
    let edge = Edge::from_toml(&format!(
        r#"
[server.tls]
listen = "127.0.0.1:0"
[[server.tls.certificates]]
chain = {:?}
key = {:?}
[[routes]]
name = "up"
kind = "upstream"
path_prefix = "/up/"
upstream = "origin"
[upstreams.origin]
peers = [{}]
"#,
        cert.chain,
        cert.key,
        peers(&[origin.addr])
    ))
    .await;
    let tls = connect(edge.tls_addr(), "127.0.0.1", ca.client(&[b"h2"]))
        .await
        .expect("TLS");
    let mut send = h2_client(tls).await;
    let request = http::Request::builder()
        .uri("https://127.0.0.1/up/plain")
        .body(http_body_util::Full::new(Bytes::new()))
        .expect("request");
    let response = within("an answer over TLS", send.send_request(request))
        .await
        .expect("answer");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), Version::HTTP_2);
    // The same route in cleartext says http.
    let reply = edge.client.send_call(edge.client.get("/up/plain")).await;
    assert_eq!(reply.status, StatusCode::OK);
    let protos: Vec<_> = origin
        .seen()
        .iter()
        .map(|seen| seen.header("x-forwarded-proto").unwrap_or("").to_owned())
        .collect();
    assert_eq!(protos, ["https", "http"]);
    edge.stop().await;
}
