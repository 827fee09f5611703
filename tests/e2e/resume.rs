//! Resuming a stream after a dropped connection is exact: no gap, no duplicate.

use serde_json::json;

use crate::gateway::{Gateway, Prng, blocking, deltas, ids, redis_config};
use crate::support::redis_server::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_any_event_is_exact() {
    let redis = blocking(RedisServer::start);
    let gateway = Gateway::start(&redis_config(&redis)).await;
    let session = gateway.init().await;
    let mut all = gateway.append(&session, &deltas(0, 40)).await;
    let mut prng = Prng(0x9e37_79b9_7f4a_7c15);

    for round in 0..20 {
        let k = prng.between_1_and(all.len());
        // Read k events from the start, then drop the connection mid-stream.
        let mut first = gateway.stream(&session).await;
        let head = first.events(k).await;
        assert_eq!(
            ids(&head),
            all[..k].to_vec(),
            "round {round}: first {k} events"
        );
        drop(first);

        // More events arrive while the client is away.
        let extra = 1 + prng.between_1_and(3);
        all.extend(gateway.append(&session, &deltas(all.len(), extra)).await);

        // Reconnect after the k-th event: header on even rounds, query on odd ones.
        let cursor = &all[k - 1];
        let call = if round % 2 == 0 {
            gateway
                .client
                .get(&session.stream_path())
                .header("last-event-id", cursor)
        } else {
            gateway
                .client
                .get(&format!("{}&last_event_id={cursor}", session.stream_path()))
        };
        let mut resumed = gateway.open(call).await;
        let rest = resumed.events(all.len() - k).await;
        assert_eq!(
            ids(&rest),
            all[k..].to_vec(),
            "round {round}: resumed after event {k} of {}",
            all.len()
        );
        for (i, frame) in rest.iter().enumerate() {
            assert_eq!(frame.json(), json!({"n": k + i}), "round {round}: data");
        }
        // Nothing else is pending: the next event is the one appended now.
        let marker = gateway.append(&session, &deltas(all.len(), 1)).await;
        let next = resumed.next_event().await.expect("the marker event");
        assert_eq!(
            next.id.as_ref(),
            Some(&marker[0]),
            "round {round}: extra event"
        );
        all.extend(marker);
    }

    // Both cursors present: the header wins over the query.
    let call = gateway
        .client
        .get(&format!(
            "{}&last_event_id={}",
            session.stream_path(),
            all[0]
        ))
        .header("last-event-id", &all[all.len() - 2]);
    let mut resumed = gateway.open(call).await;
    let last = resumed.next_event().await.expect("the last event");
    assert_eq!(last.id.as_ref(), all.last());

    // A complete ends both a resumed stream and the session.
    let complete_id = gateway.complete(&session, &json!(null)).await;
    let end = resumed.next_event().await.expect("complete");
    assert_eq!(end.id.as_deref(), Some(complete_id.as_str()));
    resumed.expect_end().await;
}
