//! A client that reads nothing for a while still gets every event: bounded buffering
//! applies back-pressure, it never drops.

use serde_json::json;

use crate::gateway::{Gateway, blocking, redis_config};
use crate::support::redis_server::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_gets_all_2000_events_in_order() {
    let redis = blocking(RedisServer::start);
    let gateway = Gateway::start(&redis_config(&redis)).await;
    let session = gateway.init().await;
    let mut slow = gateway.stream(&session).await;

    // 6 MB arrive while the client reads nothing, so the gateway's stream must wait for it
    // rather than buffer.
    let (expected, pad) = gateway.append_6_mb(&session).await;
    let complete = gateway.complete(&session, &json!({"n": 2000})).await;

    let frames = slow.events_to_end().await;
    assert_eq!(frames.len(), 2001, "2000 events and complete");
    for (n, (frame, id)) in frames.iter().zip(&expected).enumerate() {
        assert_eq!(frame.id.as_ref(), Some(id), "event {n}");
        assert_eq!(frame.json(), json!({"n": n, "pad": pad}), "event {n}");
    }
    assert_eq!(frames[2000].id.as_deref(), Some(complete.as_str()));
    assert_eq!(frames[2000].event.as_deref(), Some("complete"));
}
