//! A client that goes away cancels what serves it: the upstream request (the origin sees its
//! response body dropped) or the in-process SSE stream (the active-stream gauge falls).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use serde_json::json;

use crate::client::within;
use crate::edge::{Edge, KEY, eventually};
use crate::origin::{Dropped, Origin, channel_body, event_stream, sse_event};

#[tokio::test]
async fn a_client_disconnect_cancels_the_upstream_request() {
    // The origin sends one event, then nothing: the stream stays open (its sender is parked
    // in `senders`) until the gateway drops the upstream connection.
    let dropped: Arc<Mutex<Option<Dropped>>> = Arc::default();
    let senders = Arc::new(Mutex::new(Vec::new()));
    let (dropped_slot, parked) = (Arc::clone(&dropped), Arc::clone(&senders));
    let origin = Origin::with_handler(move |_req| {
        let (tx, body, on_drop) = channel_body();
        *dropped_slot.lock().unwrap() = Some(on_drop);
        let parked = Arc::clone(&parked);
        Box::pin(async move {
            tx.send(sse_event("tick", "1")).await.expect("body alive");
            parked.lock().unwrap().push(tx);
            event_stream(body)
        })
    })
    .await;
    let edge = Edge::proxying_to(origin.addr).await;

    let mut stream = edge
        .client
        .stream(edge.client.get("/endless"))
        .await
        .unwrap_or_else(|r| panic!("stream refused: {} {}", r.status, r.text));
    assert_eq!(
        stream.next_event().await.expect("event 1").data.as_deref(),
        Some("1")
    );
    let on_drop = dropped.lock().unwrap().take().expect("the origin answered");
    drop(stream); // the client goes away
    within(
        "the origin's response body to be dropped after the client left",
        on_drop.wait(),
    )
    .await;
    assert_eq!(origin.requests(), 1);
    drop(senders);
    edge.stop().await;
}

/// `agentgate_sse_active_streams` on `/metrics`.
async fn active_streams(edge: &Edge) -> f64 {
    let reply = edge.client.send_call(edge.client.get("/metrics")).await;
    assert_eq!(reply.status, StatusCode::OK);
    reply
        .text
        .lines()
        .find_map(|l| l.strip_prefix("agentgate_sse_active_streams "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no active stream gauge in\n{}", reply.text))
}

#[tokio::test]
async fn a_client_disconnect_ends_an_agent_stream() {
    let edge = Edge::from_toml("").await; // no [[routes]]: the agent API serves every path
    let init = edge
        .client
        .send_call(
            edge.client
                .post("/v2/sessions")
                .bearer(KEY)
                .json(&json!({})),
        )
        .await;
    assert_eq!(init.status, StatusCode::CREATED, "{}", init.text);
    let (id, token) = (
        init.json["id"].as_str().unwrap(),
        init.json["stream_token"].as_str().unwrap(),
    );
    let mut stream = edge
        .client
        .stream(
            edge.client
                .get(&format!("/v2/sessions/{id}/stream?token={token}")),
        )
        .await
        .unwrap_or_else(|r| panic!("stream refused: {} {}", r.status, r.text));
    stream.next_frame().await.expect("the retry: frame");
    let poll = Duration::from_millis(50);
    eventually("one active stream", 200, poll, || async {
        active_streams(&edge).await == 1.0
    })
    .await;

    drop(stream);
    eventually(
        "the stream to end after its client left",
        200,
        poll,
        || async { active_streams(&edge).await == 0.0 },
    )
    .await;
    edge.stop().await;
}
