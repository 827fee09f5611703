//! Many clients following one session all see every event, in order.

use serde_json::json;

use crate::client::within;
use crate::gateway::{Gateway, blocking, deltas, ids, metric, redis_config};
use crate::support::redis_server::RedisServer;

const CLIENTS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_of_one_session_see_every_event_in_order() {
    let redis = blocking(RedisServer::start);
    let gateway = Gateway::start(&redis_config(&redis)).await;
    let session = gateway.init().await;

    // Each reader reports once it holds the `retry:` frame (registered), then reads to the end.
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(CLIENTS);
    let mut readers = Vec::new();
    for _ in 0..CLIENTS {
        let client = gateway.client.clone();
        let path = session.stream_path();
        let ready = ready_tx.clone();
        readers.push(tokio::spawn(async move {
            let mut stream = client
                .stream(client.get(&path))
                .await
                .unwrap_or_else(|r| panic!("stream refused: {} {}", r.status, r.text));
            stream.expect_retry().await;
            ready.send(()).await.expect("test alive");
            stream.events_to_end().await
        }));
    }
    drop(ready_tx);
    for i in 0..CLIENTS {
        within(&format!("reader {i} to connect"), ready_rx.recv())
            .await
            .expect("reader panicked before connecting");
    }
    let gauge = metric(&gateway.metrics().await, "agentgate_sse_active_streams");
    assert_eq!(
        gauge,
        Some(CLIENTS as f64),
        "active streams while all are connected"
    );

    let mut expected = gateway.append(&session, &deltas(0, 10)).await;
    expected.extend(gateway.append(&session, &deltas(10, 1)).await);
    expected.extend(gateway.append(&session, &deltas(11, 25)).await);
    expected.push(gateway.complete(&session, &json!("ok")).await);

    for (i, reader) in readers.into_iter().enumerate() {
        let frames = within(&format!("reader {i} to finish"), reader)
            .await
            .unwrap_or_else(|e| panic!("reader {i} failed: {e}"));
        assert_eq!(ids(&frames), expected, "reader {i}");
        for (n, frame) in frames[..frames.len() - 1].iter().enumerate() {
            assert_eq!(frame.json(), json!({"n": n}), "reader {i}");
        }
    }
    let gauge = metric(&gateway.metrics().await, "agentgate_sse_active_streams");
    assert_eq!(gauge, Some(0.0), "active streams after every stream ended");
}
