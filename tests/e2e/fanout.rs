//! Many clients following one session all see every event, in order — and with
//! `features.sse_fanout` they share one store tail: 1000 viewers cost one stream handler
//! and a handful of Redis reads, not 1000 of each.

use serde_json::json;

use crate::client::within;
use crate::gateway::{Gateway, blocking, deltas, ids, metric, redis_config};
use crate::support::redis_server::RedisServer;

/// Connects `clients` viewers to one session, appends 36 events in three batches and
/// completes it; every viewer must get all of them in order. Returns the stream handlers
/// running while all were connected (store tails) and the Redis `XRANGE` calls made from
/// the first append to the end.
async fn clients_of_one_session(clients: usize, fanout: bool) -> (f64, u64) {
    let redis = blocking(RedisServer::start);
    let mut config = redis_config(&redis);
    config.features.sse_fanout = fanout;
    let gateway = Gateway::start(&config).await;
    let session = gateway.init().await;

    // Each reader reports once it holds the `retry:` frame (registered), then reads to the end.
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(clients);
    let mut readers = Vec::new();
    for _ in 0..clients {
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
    for i in 0..clients {
        within(&format!("reader {i} to connect"), ready_rx.recv())
            .await
            .expect("reader panicked before connecting");
    }
    let tails = metric(&gateway.metrics().await, "agentgate_sse_active_streams")
        .expect("active streams metric");

    let before = blocking(|| redis.command_calls("xrange"));
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
    let reads = blocking(|| redis.command_calls("xrange")) - before;
    let gauge = metric(&gateway.metrics().await, "agentgate_sse_active_streams");
    assert_eq!(gauge, Some(0.0), "active streams after every stream ended");
    gateway.stop().await;
    (tails, reads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_viewers_share_one_tail_with_fanout() {
    let (tails, reads) = clients_of_one_session(1000, true).await;
    assert_eq!(
        tails, 1.0,
        "one stream handler reads the store for all viewers"
    );
    // One tail wakes at most once per write (4 writes) and reads once per wake, plus the
    // reads racing a wake; far below one per viewer.
    assert!(
        reads <= 12,
        "{reads} XRANGE calls for 1000 viewers of one tail"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fanout_every_viewer_tails_the_store() {
    let (tails, reads) = clients_of_one_session(50, false).await;
    assert_eq!(tails, 50.0);
    // Each of 50 tails would read once per write (4 writes) if notifications carried no
    // events; viewers that keep up take them from the notification instead.
    assert!(
        reads < 200,
        "{reads} XRANGE calls for 50 tails and 4 writes"
    );
}

/// A reader that keeps up takes each write's events from its notification: once it has
/// caught up, the rest of the session costs it no `XRANGE` at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_keeps_up_reads_nothing_the_notifications_carry_the_events() {
    let redis = blocking(RedisServer::start);
    let mut config = redis_config(&redis);
    config.features.sse_fanout = false; // the stream handler itself, no layer in between
    let gateway = Gateway::start(&config).await;
    let session = gateway.init().await;
    let mut stream = gateway.stream(&session).await;
    // Past its first read: it holds the first event.
    let first = gateway.append(&session, &deltas(0, 1)).await;
    let frame = within("the first event", stream.next_event()).await;
    assert_eq!(frame.and_then(|f| f.id), first.first().cloned());

    let before = blocking(|| redis.command_calls("xrange"));
    for n in 0..10 {
        for id in gateway.append(&session, &deltas(1 + 2 * n, 2)).await {
            let frame = within("the next event", stream.next_event()).await;
            assert_eq!(frame.and_then(|f| f.id), Some(id));
        }
    }
    let done = gateway.complete(&session, &json!("ok")).await;
    let rest = within("the complete event", stream.events_to_end()).await;
    assert_eq!(ids(&rest), [done]);
    let reads = blocking(|| redis.command_calls("xrange")) - before;
    assert_eq!(reads, 0, "XRANGE calls after the reader caught up");
    gateway.stop().await;
}

/// A viewer that reads nothing does not hold the others back: they read all of ~19 MB of
/// events (far more than socket buffers and its queue hold) and the end while it stalls —
/// if the shared tail waited for it, they would wait too and time out. Afterwards it
/// reads everything, in order, exactly once (detached, it continues from its own cursor).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_viewer_does_not_delay_the_others_and_loses_nothing() {
    let mut config = crate::gateway::memory_config();
    config.sse.fanout.subscriber_queue = 8;
    // 1200 events of 16 kB: past the default byte quota of one session (16 MiB).
    config.store.quotas.max_session_bytes = 64 * 1024 * 1024;
    let gateway = Gateway::start(&config).await;
    let session = gateway.init().await;
    let mut stalled = gateway.stream(&session).await;

    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(3);
    let mut readers = Vec::new();
    for _ in 0..3 {
        let client = gateway.client.clone();
        let path = session.stream_path();
        let ready = ready_tx.clone();
        readers.push(tokio::spawn(async move {
            let mut stream = client.stream(client.get(&path)).await.expect("stream");
            stream.expect_retry().await;
            ready.send(()).await.expect("test alive");
            stream.events_to_end().await
        }));
    }
    for _ in 0..3 {
        within("readers to connect", ready_rx.recv()).await;
    }

    let pad = "p".repeat(16_000);
    let mut expected = Vec::new();
    for batch in 0..60 {
        let events: Vec<_> = (batch * 20..(batch + 1) * 20)
            .map(|n| json!({"kind": "delta", "data": {"n": n, "pad": pad}}))
            .collect();
        expected.extend(gateway.append(&session, &events).await);
    }
    expected.push(gateway.complete(&session, &json!("end")).await);

    for (i, reader) in readers.into_iter().enumerate() {
        let frames = within(&format!("reader {i} to finish while one stalls"), reader)
            .await
            .expect("reader");
        assert_eq!(ids(&frames), expected, "reader {i}");
    }
    let metrics = gateway.metrics().await;
    // The stalled viewer was detached (a reader slower than the tail may have been too).
    let detached = metric(&metrics, "agentgate_sse_fanout_detached").unwrap_or(0.0);
    assert!(detached >= 1.0, "{metrics}");
    let frames = stalled.events_to_end().await;
    assert_eq!(ids(&frames), expected, "the stalled viewer, afterwards");
    for (n, frame) in frames[..frames.len() - 1].iter().enumerate() {
        assert_eq!(frame.json()["n"], n, "stalled viewer, event {n}");
    }
    gateway.stop().await;
}
