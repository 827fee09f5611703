//! A viewer behind the log's cap (`store.events_maxlen`) is told what it missed: one
//! `event: gap` naming the trimmed range, then every event still kept, exactly once — on
//! plain streams and multiplexed ones, for resumes (`Last-Event-ID`) and for slow viewers
//! detached from a shared stream. Exact, or explicitly told; never silently short.

use std::collections::HashMap;

use agentgate_config::Config;
use serde_json::{Value, json};

use crate::client::SseFrame;
use crate::gateway::{
    Gateway, Session, blocking, deltas, ids, memory_config, metric, redis_config,
};
use crate::multiplex::open;
use crate::support::redis_server::RedisServer;

/// The cap of every test here: small, so a few hundred events pass it.
const MAXLEN: u64 = 50;

fn capped(mut config: Config) -> Config {
    config.store.events_maxlen = MAXLEN;
    config
}

/// Checks one stream's frames against the ids the session was given, in order, from after
/// `cursor`: each frame is the next expected event, or a gap whose `after` is the last id
/// received (the cursor first) and whose `id:` and `last` name an expected event further on;
/// nothing else. Returns the gaps told, as `(after, last)`.
fn exact_or_told(
    frames: &[SseFrame],
    expected: &[String],
    mut cursor: Option<String>,
) -> Vec<(Option<String>, String)> {
    let mut next = cursor
        .as_ref()
        .map_or(0, |c| expected.iter().position(|id| id == c).unwrap() + 1);
    let mut gaps = Vec::new();
    for frame in frames {
        let id = frame.id.clone().expect("every event has an id");
        if frame.event.as_deref() == Some("gap") {
            let data = frame.json();
            assert_eq!(data["after"], json!(cursor), "the gap follows what was got");
            assert_eq!(data["last"], json!(id), "id: is the newest missing id");
            let at = expected
                .iter()
                .position(|e| *e == id)
                .unwrap_or_else(|| panic!("gap names an id never appended: {frame:?}"));
            assert!(at >= next, "a gap over events already delivered: {frame:?}");
            gaps.push((cursor.clone(), id.clone()));
            next = at + 1;
        } else {
            assert_eq!(
                Some(&id),
                expected.get(next),
                "event {next} of {}",
                expected.len()
            );
            next += 1;
        }
        cursor = Some(id);
    }
    assert_eq!(next, expected.len(), "every event delivered or told");
    gaps
}

/// Appends `n` deltas in batches of 10.
async fn append(gateway: &Gateway, session: &Session, from: usize, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for at in (from..from + n).step_by(10) {
        ids.extend(
            gateway
                .append(session, &deltas(at, 10.min(from + n - at)))
                .await,
        );
    }
    ids
}

/// The case, scaled down: 150 events with a cap of 50, then a stream resumed from
/// the first event's id. It gets one gap (after the first event, up to the newest trimmed
/// one), then the kept events exactly and `complete`; resuming from the gap's id is told
/// nothing more; and the gap is counted.
async fn resume_from_a_trimmed_id(config: Config) {
    let gateway = Gateway::start(&capped(config)).await;
    let session = gateway.init().await;
    let mut all = append(&gateway, &session, 0, 150).await;
    all.push(gateway.complete(&session, &json!("done")).await);

    let resume = |cursor: &str| {
        gateway
            .client
            .get(&session.stream_path())
            .header("last-event-id", cursor)
    };
    let frames = gateway.open(resume(&all[0])).await.events_to_end().await;
    let gaps = exact_or_told(&frames, &all, Some(all[0].clone()));
    assert_eq!(gaps.len(), 1, "one gap: {gaps:?}");
    assert_eq!(frames[0].event.as_deref(), Some("gap"), "told first");
    let last = &gaps[0].1;
    let kept = all.len() - 1 - all.iter().position(|id| id == last).unwrap();
    assert!(
        kept >= MAXLEN as usize && kept < 150,
        "the newest {kept} kept (cap {MAXLEN})"
    );

    // A browser reconnecting after the gap frame sends its id: the rest, nothing told.
    let again = gateway.open(resume(last)).await.events_to_end().await;
    assert_eq!(ids(&again), ids(&frames[1..]));
    // From the start (no cursor): the trimmed start is told too, `after` null.
    let fresh = gateway.stream(&session).await.events_to_end().await;
    assert_eq!(exact_or_told(&fresh, &all, None), [(None, last.clone())]);

    let text = gateway.metrics().await;
    assert_eq!(metric(&text, "agentgate_stream_gaps_total"), Some(2.0));
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_behind_the_cap_is_told_the_gap_redis() {
    let redis = blocking(RedisServer::start);
    resume_from_a_trimmed_id(redis_config(&redis)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_behind_the_cap_is_told_the_gap_memory() {
    resume_from_a_trimmed_id(memory_config()).await;
}

/// A multiplexed frame unwrapped: the inner event as its own stream would have sent it.
fn unwrap(frame: &SseFrame) -> (String, SseFrame) {
    let envelope: Value = frame.json();
    let inner = SseFrame {
        id: envelope["id"].as_str().map(str::to_owned),
        event: envelope["event"].as_str().map(str::to_owned),
        data: Some(envelope["data"].to_string()),
        ..SseFrame::default()
    };
    (envelope["stream"].as_str().unwrap().to_owned(), inner)
}

/// One multiplexed connection follows two sessions; the client goes away, one session
/// passes the cap, and the resume with the connection's `Last-Event-ID` gets that
/// session's gap (in its envelope) before its kept events, the other session's events
/// untouched, each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multiplexed_resume_tells_the_gap_of_the_session_that_passed_the_cap() {
    let redis = blocking(RedisServer::start);
    let gateway = Gateway::start(&capped(redis_config(&redis))).await;
    let (a, b) = (gateway.init().await, gateway.init().await);
    let both = [a.clone(), b.clone()];
    let mut expected: HashMap<String, Vec<String>> = HashMap::new();
    expected.insert(a.id.clone(), append(&gateway, &a, 0, 5).await);
    expected.insert(b.id.clone(), append(&gateway, &b, 0, 2).await);

    let mut first = open(&gateway, &both, None).await;
    let got = first.events(7).await;
    let cursor = got.last().and_then(|f| f.id.clone()).expect("a cursor");
    drop(first);

    // While the client is away, a passes the cap; b gets one event.
    let more_a = append(&gateway, &a, 5, 200).await;
    expected.get_mut(&a.id).unwrap().extend(more_a);
    let more_b = append(&gateway, &b, 2, 1).await;
    expected.get_mut(&b.id).unwrap().extend(more_b);
    for session in [&a, &b] {
        let done = gateway.complete(session, &json!("done")).await;
        expected.get_mut(&session.id).unwrap().push(done);
    }

    let rest = open(&gateway, &both, Some(&cursor))
        .await
        .events_to_end()
        .await;
    let mut per_session: HashMap<String, Vec<SseFrame>> = HashMap::new();
    for frame in got.iter().chain(&rest) {
        let (stream, inner) = unwrap(frame);
        per_session.entry(stream).or_default().push(inner);
    }
    let gaps_a = exact_or_told(&per_session[&a.id], &expected[&a.id], None);
    assert_eq!(gaps_a.len(), 1, "a: one gap {gaps_a:?}");
    assert_eq!(
        gaps_a[0].0.as_ref(),
        Some(&expected[&a.id][4]),
        "after a's 5th"
    );
    let gaps_b = exact_or_told(&per_session[&b.id], &expected[&b.id], None);
    assert!(gaps_b.is_empty(), "b lost nothing: {gaps_b:?}");

    // The gap frame's own cursor resumes after the gap: nothing told twice.
    let gap_frame = rest
        .iter()
        .find(|f| unwrap(f).1.event.as_deref() == Some("gap"))
        .expect("the gap frame");
    let after_gap = open(&gateway, &both, gap_frame.id.as_deref())
        .await
        .events_to_end()
        .await;
    assert!(
        after_gap
            .iter()
            .all(|f| unwrap(f).1.event.as_deref() != Some("gap"))
    );
    gateway.stop().await;
}

/// With fan-out, a viewer that stops reading is detached from the shared stream and goes on
/// through its own call from its last event; by then the cap has trimmed past it, so that
/// call tells it the gap. Every viewer's stream is exact or told, and the stalled one was
/// told at least once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_viewer_behind_the_cap_is_told_the_gap() {
    let redis = blocking(RedisServer::start);
    let mut config = capped(redis_config(&redis));
    config.features.sse_fanout = true;
    config.sse.fanout.subscriber_queue = 4;
    let gateway = Gateway::start(&config).await;
    let session = gateway.init().await;
    let mut reader = gateway.stream(&session).await;
    let mut stalled = gateway.stream(&session).await;

    // 6 MB while the stalled viewer reads nothing and the other reads along.
    let reading = tokio::spawn(async move { reader.events_to_end().await });
    let (mut expected, _) = gateway.append_6_mb(&session).await;
    expected.push(gateway.complete(&session, &json!("done")).await);

    let read = reading.await.unwrap();
    exact_or_told(&read, &expected, None);
    let slow = stalled.events_to_end().await;
    let gaps = exact_or_told(&slow, &expected, None);
    assert!(
        !gaps.is_empty(),
        "the stalled viewer was told what it missed"
    );
    let text = gateway.metrics().await;
    assert!(metric(&text, "agentgate_sse_fanout_detached").unwrap_or(0.0) >= 1.0);
    assert!(metric(&text, "agentgate_stream_gaps_total").unwrap_or(0.0) >= 1.0);
    gateway.stop().await;
}
