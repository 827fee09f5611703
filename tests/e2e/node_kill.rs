//! A gateway node dies (SIGKILL) under a viewer while another node serves the same Redis:
//! the viewer's stream breaks, events go on being appended through the survivor, and the
//! viewer, reconnecting to the survivor with its last id as `EventSource` would, gets every
//! event exactly once, in order, then `complete`. (`bench/faults.sh` measures the same with
//! 3 nodes, a load balancer and 300 viewers.)

use serde_json::json;

use crate::client::{Client, within};
use crate::gateway::{Gateway, blocking, deltas, ids, process_toml, redis_config};
use crate::process::Process;
use crate::support::redis_server::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_resumes_exactly_on_another_node_after_its_node_is_killed() {
    let redis = blocking(RedisServer::start);
    let survivor = Gateway::start(&redis_config(&redis)).await;
    let doomed =
        blocking(|| Process::start(&process_toml(&format!("urls = [\"{}\"]", redis.url()), "")));
    let on_doomed = Client::new(doomed.addr);

    // Created on the survivor, watched on the doomed node.
    let session = survivor.init().await;
    let mut viewer = on_doomed
        .stream(on_doomed.get(&session.stream_path()))
        .await
        .expect("a stream on the doomed node");
    viewer.expect_retry().await;
    let before = survivor.append(&session, &deltas(0, 5)).await;
    assert_eq!(ids(&viewer.events(5).await), before);

    // SIGKILL: no clean end; the connection breaks.
    drop(doomed);
    within("the broken stream to end", async {
        while let Ok(Some(frame)) = viewer.try_next().await {
            assert!(frame.is_comment(), "nothing more after the kill: {frame:?}");
        }
    })
    .await;

    // The agent goes on through the survivor while the viewer is away.
    let during = survivor.append(&session, &deltas(5, 7)).await;
    let cursor = before.last().expect("five events").clone();
    let mut resumed = survivor
        .open(
            survivor
                .client
                .get(&session.stream_path())
                .header("last-event-id", &cursor),
        )
        .await;
    let after = survivor.append(&session, &deltas(12, 3)).await;
    let got = resumed.events(10).await;
    let expected: Vec<String> = during.iter().chain(&after).cloned().collect();
    assert_eq!(
        ids(&got),
        expected,
        "every event after the cursor, once, in order"
    );
    for (i, frame) in got.iter().enumerate() {
        assert_eq!(frame.json(), json!({"n": 5 + i}));
    }
    let complete = survivor.complete(&session, &json!("done")).await;
    let last = resumed.next_event().await.expect("the complete event");
    assert_eq!(last.id.as_ref(), Some(&complete));
    assert_eq!(last.event.as_deref(), Some("complete"));
    resumed.expect_end().await;
    survivor.stop().await;
}
