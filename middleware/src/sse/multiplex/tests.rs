//! Unit tests over in-test SSE streams: `/s/{name}` serves `name`'s log after the request's
//! `Last-Event-ID`, then follows it live; `?token=bad` is refused with 401.

use std::collections::HashMap;
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

type InnerBody = UnsyncBoxBody<Bytes, Infallible>;

#[derive(Default)]
struct Streams {
    logs: Mutex<HashMap<String, Vec<u64>>>,
    live: Mutex<HashMap<String, Vec<mpsc::UnboundedSender<Option<Bytes>>>>>,
}

fn frame(name: &str, n: u64) -> Bytes {
    Bytes::from(format!(
        "id: {n}\nevent: tick\ndata: {{\"{name}\":{n}}}\n\n"
    ))
}

impl Streams {
    fn append(&self, name: &str, n: u64) {
        self.logs
            .lock()
            .unwrap()
            .entry(name.to_owned())
            .or_default()
            .push(n);
        for tx in self
            .live
            .lock()
            .unwrap()
            .entry(name.to_owned())
            .or_default()
        {
            let _ = tx.send(Some(frame(name, n)));
        }
    }

    /// Ends `name`'s open streams.
    fn end(&self, name: &str) {
        for tx in self
            .live
            .lock()
            .unwrap()
            .entry(name.to_owned())
            .or_default()
        {
            let _ = tx.send(None);
        }
    }

    fn respond(&self, req: &Request<()>) -> Response<InnerBody> {
        let name = req.uri().path().strip_prefix("/s/").unwrap().to_owned();
        if req.uri().query() == Some("token=bad") {
            let mut response = Response::new(
                http_body_util::Full::new(Bytes::from(r#"{"error":{"code":"bad_token"}}"#))
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            );
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            return response;
        }
        let after: u64 = req
            .headers()
            .get("last-event-id")
            .map_or(0, |v| v.to_str().unwrap().parse().unwrap());
        let (tx, mut rx) = mpsc::unbounded_channel::<Option<Bytes>>();
        tx.send(Some(Bytes::from_static(b"retry: 500\n\n")))
            .unwrap();
        let logs = self.logs.lock().unwrap();
        for &n in logs
            .get(&name)
            .into_iter()
            .flatten()
            .filter(|&&n| n > after)
        {
            tx.send(Some(frame(&name, n))).unwrap();
        }
        self.live.lock().unwrap().entry(name).or_default().push(tx);
        drop(logs);
        let stream = futures_util::stream::poll_fn(move |cx| {
            rx.poll_recv(cx)
                .map(|item| item.flatten().map(|b| Ok::<_, Infallible>(Frame::data(b))))
        });
        let mut response = Response::new(http_body_util::StreamBody::new(stream).boxed_unsync());
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/event-stream"),
        );
        response
    }
}

type Svc = SseMultiplex<
    tower::util::BoxCloneService<Request<()>, Response<InnerBody>, Infallible>,
    QueryDemux,
>;

fn setup(max_streams: usize) -> (Arc<Streams>, Svc) {
    let streams = Arc::new(Streams::default());
    let serving = Arc::clone(&streams);
    let inner = service_fn(move |req: Request<()>| {
        let response = serving.respond(&req);
        async move { Ok::<_, Infallible>(response) }
    });
    let demux = QueryDemux {
        path: "/mux".to_owned(),
        streams_param: "streams".to_owned(),
        tokens_param: "tokens".to_owned(),
        inner_path: "/s/{}".to_owned(),
        inner_token_param: "token".to_owned(),
    };
    let policy = MultiplexPolicy {
        max_streams,
        heartbeat_ms: 60_000,
    };
    let layer = SseMultiplexLayer::new(demux, policy);
    (
        streams,
        layer.layer(tower::util::BoxCloneService::new(inner)),
    )
}

async fn call(
    svc: &mut Svc,
    target: &str,
    cursor: Option<&str>,
) -> Response<MultiplexBody<InnerBody>> {
    let mut req = Request::get(target);
    if let Some(cursor) = cursor {
        req = req.header("last-event-id", cursor);
    }
    svc.ready()
        .await
        .unwrap()
        .call(req.body(()).unwrap())
        .await
        .unwrap()
}

/// One merged event: its `id:` and its envelope.
#[derive(Debug)]
struct Merged {
    id: String,
    envelope: serde_json::Value,
}

struct Reader {
    body: MultiplexBody<InnerBody>,
    buf: String,
}

impl Reader {
    /// The next merged event; `None` at the end of the response.
    async fn next(&mut self) -> Option<Merged> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let id = block.lines().find_map(|l| l.strip_prefix("id: "));
                let data = block.lines().find_map(|l| l.strip_prefix("data: "));
                if let (Some(id), Some(data)) = (id, data) {
                    return Some(Merged {
                        id: id.to_owned(),
                        envelope: serde_json::from_str(data).unwrap(),
                    });
                }
                continue;
            }
            let frame = tokio::time::timeout(Duration::from_secs(10), self.body.frame())
                .await
                .expect("a frame within 10 s")?
                .unwrap();
            self.buf
                .push_str(std::str::from_utf8(&frame.into_data().unwrap()).unwrap());
        }
    }
}

async fn open(svc: &mut Svc, target: &str, cursor: Option<&str>) -> Reader {
    let response = call(svc, target, cursor).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    Reader {
        body: response.into_body(),
        buf: String::new(),
    }
}

#[tokio::test]
async fn merges_streams_tags_them_and_resumes_each_exactly() {
    let (streams, mut svc) = setup(4);
    streams.append("a", 1);
    let mut reader = open(&mut svc, "/mux?streams=a,b", None).await;
    let first = reader.next().await.unwrap();
    assert_eq!(
        first.envelope,
        serde_json::json!({"stream": "a", "id": "1", "event": "tick", "data": {"a": 1}})
    );
    streams.append("b", 7);
    let second = reader.next().await.unwrap();
    assert_eq!(second.envelope["stream"], "b");
    // The cursor after b's 7 holds a's 1 too: resuming from it gets only what is new.
    let cursor = second.id.clone();
    drop(reader);
    streams.append("a", 2);
    streams.append("b", 8);
    let mut resumed = open(&mut svc, "/mux?streams=a,b", Some(&cursor)).await;
    let mut got = vec![];
    for _ in 0..2 {
        let m = resumed.next().await.unwrap();
        got.push((m.envelope["stream"].clone(), m.envelope["id"].clone()));
    }
    got.sort_by_key(|(s, _)| s.to_string());
    assert_eq!(
        got,
        [
            (serde_json::json!("a"), serde_json::json!("2")),
            (serde_json::json!("b"), serde_json::json!("8"))
        ]
    );
}

#[tokio::test]
async fn one_stream_ending_keeps_the_response_until_all_have() {
    let (streams, mut svc) = setup(4);
    let mut reader = open(&mut svc, "/mux?streams=a,b", None).await;
    streams.end("a");
    streams.append("b", 1);
    assert_eq!(reader.next().await.unwrap().envelope["stream"], "b");
    streams.end("b");
    assert!(reader.next().await.is_none(), "ends once every stream has");
}

async fn refused(svc: &mut Svc, target: &str, cursor: Option<&str>) -> (StatusCode, String) {
    let response = call(svc, target, cursor).await;
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn bad_requests_are_refused_naming_the_problem() {
    let (_streams, mut svc) = setup(2);
    let cases = [
        ("/mux", None, "streams: is required"),
        ("/mux?streams=a,a", None, "listed twice"),
        ("/mux?streams=a,b/c", None, "not a valid name"),
        ("/mux?streams=a,b,c", None, "at most 2"),
        (
            "/mux?streams=a,b&tokens=x",
            None,
            "tokens: has 1 entries for 2 streams",
        ),
        ("/mux?streams=a,b", Some("nonsense"), "Last-Event-ID"),
    ];
    for (target, cursor, expected) in cases {
        let (status, body) = refused(&mut svc, target, cursor).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{target}: {body}");
        assert!(body.contains(expected), "{target}: {body}");
    }
    // A cursor made for another list of streams.
    let other = Cursor::start(&["x", "y"]).encode();
    let (status, body) = refused(&mut svc, "/mux?streams=a,b", Some(&other)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("another list"), "{body}");
}

#[tokio::test]
async fn a_refused_stream_refuses_the_request_naming_it() {
    let (_streams, mut svc) = setup(4);
    let (status, body) = refused(&mut svc, "/mux?streams=a,b&tokens=good,bad", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains(r#"stream \"b\" refused"#), "{body}");
}

#[tokio::test]
async fn other_paths_pass_through() {
    let (streams, mut svc) = setup(4);
    streams.append("a", 1);
    let response = call(&mut svc, "/s/a", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(format!("{:?}", response.body()).contains("inner"));
}
