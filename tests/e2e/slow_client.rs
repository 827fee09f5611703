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

    // 2000 events of 3 KB (6 MB, more than loopback socket buffers hold) arrive while the
    // client reads nothing, so the gateway's stream must wait for it rather than buffer.
    let pad = "p".repeat(3000);
    let mut expected = Vec::new();
    for batch in 0..8 {
        let events: Vec<_> = (batch * 250..(batch + 1) * 250)
            .map(|n| json!({"kind": "delta", "data": {"n": n, "pad": pad}}))
            .collect();
        expected.extend(gateway.append(&session, &events).await);
    }
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
