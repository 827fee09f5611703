//! Graceful shutdown ends open SSE streams cleanly, then returns.

use std::time::Duration;

use serde_json::json;

use crate::client::within;
use crate::gateway::{Gateway, deltas, ids, memory_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_ends_open_streams_cleanly() {
    // A grace far beyond the test's wait: if streams were not ended by shutdown, stop()
    // would sit out the grace and the test would time out instead of passing by accident.
    let gateway = Gateway::start_with_grace(&memory_config(), Duration::from_secs(600)).await;
    let quiet = gateway.init().await;
    let mut idle = gateway.stream(&quiet).await;
    let session = gateway.init().await;
    let mut busy = gateway.stream(&session).await;
    let sent = gateway.append(&session, &deltas(0, 3)).await;
    assert_eq!(ids(&busy.events(3).await), sent);
    // An idle keep-alive connection in the client's pool must not hold shutdown up either.
    gateway.append(&session, &[json!({"kind": "x"})]).await;
    assert_eq!(busy.next_event().await.unwrap().event.as_deref(), Some("x"));

    let stop = tokio::spawn(gateway.stop());
    for (name, stream) in [("idle", &mut idle), ("busy", &mut busy)] {
        loop {
            match within(&format!("the {name} stream to end"), stream.try_next()).await {
                Ok(Some(frame)) if frame.event.is_none() => continue, // heartbeat or retry
                Ok(Some(frame)) => panic!("{name} stream: unexpected event {frame:?}"),
                Ok(None) => break,
                Err(e) => panic!("{name} stream ended with an error, not cleanly: {e:?}"),
            }
        }
    }
    within("stop() to return", stop).await.unwrap();
}
