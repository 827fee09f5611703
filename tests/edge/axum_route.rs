//! A user's axum `Router` mounted on a route through the bridge: it reads streamed request
//! bodies and streams its responses, unbuffered (the second event is produced only after
//! the client has the first).

use std::sync::Arc;

use agentgate_proxy::bridge::ClientAddr;
use agentgate_proxy::{Route, RouteTable, route_service};
use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::StatusCode;
use tokio::sync::Notify;

use crate::edge::Edge;
use crate::origin::{channel_body, sse_event};

/// `POST /app/echo`: the request body back, with the client's IP (from the bridge's
/// [`ClientAddr`] extension) in `x-client-ip`.
async fn echo(req: Request) -> Response {
    let ip = req
        .extensions()
        .get::<ClientAddr>()
        .map(|ClientAddr(addr)| addr.ip().to_string())
        .unwrap_or_default();
    match axum::body::to_bytes(req.into_body(), 1 << 20).await {
        Ok(bytes) => ([("x-client-ip", ip)], bytes).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

/// The router: `/app/echo`, and `/app/ticks` (SSE: event 1, then event 2 once `next` fires).
fn router(next: Arc<Notify>) -> Router {
    let ticks = move || {
        let next = Arc::clone(&next);
        async move {
            let (tx, body, _dropped) = channel_body();
            tokio::spawn(async move {
                let _ = tx.send(sse_event("tick", "1")).await;
                next.notified().await;
                let _ = tx.send(sse_event("tick", "2")).await;
            });
            ([("content-type", "text/event-stream")], Body::new(body))
        }
    };
    Router::new()
        .route("/app/echo", post(echo))
        .route("/app/ticks", get(ticks))
}

#[tokio::test]
async fn an_axum_router_serves_a_route_through_the_bridge() {
    let next = Arc::new(Notify::new());
    let mut table = RouteTable::new();
    table.push(Route {
        name: "app".to_owned(),
        host: None,
        path_prefix: "/app/".to_owned(),
        methods: Vec::new(),
        service: route_service(router(Arc::clone(&next))),
    });
    let edge = Edge::from_table(table, Vec::new());
    let client = &edge.client;

    // A body with a length, and a chunked one: both read whole by the handler.
    let reply = client
        .send_call(client.post("/app/echo").body("hello axum"))
        .await;
    assert_eq!(
        (reply.status, reply.text.as_str()),
        (StatusCode::OK, "hello axum")
    );
    assert_eq!(reply.header("x-client-ip"), Some("127.0.0.1"));
    let chunks = vec![
        Bytes::from_static(b"{\"a\":"),
        Bytes::from_static(b"1,"),
        Bytes::from_static(b"\"b\":2}"),
    ];
    let reply = client
        .send_call(client.post("/app/echo").chunked_json(chunks))
        .await;
    assert_eq!(reply.text, r#"{"a":1,"b":2}"#);

    // Unknown paths under the route are axum's 404; outside it the gateway's.
    let reply = client.send_call(client.get("/app/missing")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = client.send_call(client.get("/elsewhere")).await;
    assert_eq!(reply.error_code(), "not_found", "{}", reply.text);

    let mut stream = client
        .stream(client.get("/app/ticks"))
        .await
        .unwrap_or_else(|r| panic!("refused: {} {}", r.status, r.text));
    let first = stream.next_event().await.expect("tick 1");
    assert_eq!(first.data.as_deref(), Some("1"));
    next.notify_one();
    let second = stream.next_event().await.expect("tick 2");
    assert_eq!(second.data.as_deref(), Some("2"));
    stream.expect_end().await;
    drop(stream);
    edge.stop().await;
}
