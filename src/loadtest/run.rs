//! The session driver: starts sessions on the arrival schedule, within the concurrency
//! limit and the run's deadline, and plays each one as its agent and as its viewer.
//!
//! One session:
//!
//! 1. `POST /v2/sessions` (init; time to first byte is measured);
//! 2. `GET` its stream and wait for the `retry:` frame, which the gateway sends once the
//!    stream is registered, so every later append is a live delivery;
//! 3. a reader task follows the stream while the agent appends `events` in batches of
//!    `batch_size`, runs `tool_batches` tool batches, and completes — pausing
//!    `think_time_ms` before each call;
//! 4. the reader checks it got every acknowledged event exactly once and in order, then the
//!    `complete` event. A `gap` event (the gateway telling the reader that events were
//!    trimmed by `store.events_maxlen` before it got them) is not a loss: the events between
//!    the last one received before it and the first one after it count as missed and told,
//!    apart from `event_lost` (acknowledged, never delivered, never told).
//!
//! Delivery latency needs no clock sync: agent and reader share the process, so each
//! event's data carries its send time in microseconds since the run's `Instant` epoch and
//! the reader subtracts it from its own receive time.

use std::collections::HashSet;
use std::sync::Arc;

use agentgate_middleware::sse::Item;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Duration, Instant};

use super::arrival::Schedule;
use super::client::{Client, SseReader};
use super::record::{Metric, Recorder, SessionLog};
use super::scenario::{Scenario, SessionPlan};
use crate::api::stream::GAP_KIND;

/// Event kind of the events the load generator appends.
pub const EVENT_KIND: &str = "loadtest";

/// How often the arrival loop looks at the schedule while a session is not yet due.
const ARRIVAL_TICK: Duration = Duration::from_millis(2);

/// What the run did, before aggregation.
#[derive(Debug)]
pub struct Outcome {
    /// Sessions started.
    pub started: u64,
    /// Wall time from the first arrival to the last session's end.
    pub elapsed: Duration,
    /// Whether the run's `max_duration_secs` cut it short.
    pub hit_deadline: bool,
}

/// Everything a session needs, shared by all of them.
struct Context {
    client: Client,
    plan: SessionPlan,
    epoch: Instant,
    padding: String,
}

/// Runs `scenario` against `client`'s target, recording into `recorder`; `on_progress` is
/// told after each arrival and each finished session (for a progress bar).
pub async fn drive(
    scenario: &Scenario,
    client: Client,
    recorder: &Arc<Recorder>,
    on_progress: &(dyn Fn(u64) + Sync),
) -> Outcome {
    let epoch = Instant::now();
    let deadline = epoch + scenario.run.max_duration();
    let schedule = Schedule::from_arrival(&scenario.arrival);
    let total = scenario.run.sessions;
    let ctx = Arc::new(Context {
        client,
        plan: scenario.session.clone(),
        epoch,
        padding: "x".repeat(scenario.session.event_bytes),
    });
    let slots = Arc::new(Semaphore::new(
        usize::try_from(scenario.run.concurrency).unwrap_or(usize::MAX),
    ));
    let mut sessions = JoinSet::new();
    let mut started = 0;
    let mut hit_deadline = false;
    while started < total {
        if Instant::now() >= deadline {
            hit_deadline = true;
            break;
        }
        while let Some(joined) = sessions.try_join_next() {
            if joined.is_err() {
                // A session task panicked: a bug, but still a failed session, not a crash.
                recorder.session_cut("internal_panic");
            }
        }
        if schedule.due(epoch.elapsed(), total) <= started {
            tokio::time::sleep(ARRIVAL_TICK).await;
            continue;
        }
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => permit,
            () = tokio::time::sleep_until(deadline) => { hit_deadline = true; break; }
        };
        let Ok(permit) = permit else { break }; // the semaphore is never closed
        started += 1;
        recorder.start_session();
        let (ctx, recorder) = (Arc::clone(&ctx), Arc::clone(recorder));
        sessions.spawn(async move {
            match tokio::time::timeout_at(deadline, session(&ctx, started)).await {
                Ok(log) => recorder.finish_session(log),
                Err(_) => recorder.session_cut("deadline"),
            }
            drop(permit);
        });
        on_progress(started);
    }
    while let Some(joined) = sessions.join_next().await {
        if joined.is_err() {
            recorder.session_cut("internal_panic");
        }
        on_progress(started);
    }
    hit_deadline |= Instant::now() >= deadline;
    Outcome {
        started,
        elapsed: epoch.elapsed(),
        hit_deadline,
    }
}

/// What the agent tells the reader when it is done.
#[derive(Debug, Clone, Copy)]
struct AgentDone {
    /// Events acknowledged by the gateway (sequence numbers `0..appended`).
    appended: u64,
    /// Whether complete was acknowledged (so a `complete` event must arrive).
    completed: bool,
}

/// Plays session number `n`, returning everything it measured.
async fn session(ctx: &Context, n: u64) -> SessionLog {
    let began = Instant::now();
    let mut log = SessionLog::new(ctx.epoch);
    let plan = &ctx.plan;

    // 1. init
    log.requests += 1;
    let init = ctx
        .client
        .post_json(
            "/v2/sessions",
            &json!({ "metadata": { "loadtest": n } }),
            StatusCode::CREATED,
        )
        .await;
    let reply = match init {
        Ok(reply) => reply,
        Err(e) => {
            log.error(format!("init_{}", e.kind()), 1);
            return log;
        }
    };
    log.sample(Metric::Init, Instant::now(), reply.first_byte);
    let (Some(id), Some(token)) = (
        reply.json["id"].as_str(),
        reply.json["stream_token"].as_str(),
    ) else {
        log.error("init_bad_response", 1);
        return log;
    };
    let events_path = format!("/v2/sessions/{id}/events");

    // 2. the stream, registered before the first append
    let (done_tx, done_rx) = oneshot::channel();
    let reader = match open(ctx, &mut log, id, token).await {
        Some(stream) => {
            let epoch = ctx.epoch;
            let timeout = ctx.client.timeout();
            Some(AbortOnDrop(tokio::spawn(follow(
                stream, epoch, timeout, done_rx,
            ))))
        }
        None => None,
    };

    // 3. the agent
    let mut seq = 0;
    while seq < plan.events {
        let n = plan.batch_size.min(plan.events - seq);
        tokio::time::sleep(plan.think_time()).await;
        let sent_us = micros_since(ctx.epoch);
        let events: Vec<Value> = (seq..seq + n)
            .map(|s| json!({"kind": EVENT_KIND, "data": {"seq": s, "sent_us": sent_us, "pad": ctx.padding}}))
            .collect();
        log.requests += 1;
        match ctx
            .client
            .post_json(&events_path, &json!({ "events": events }), StatusCode::OK)
            .await
        {
            Ok(reply) => {
                log.sample(Metric::Append, Instant::now(), reply.first_byte);
                let ids = reply.json["ids"].as_array().map_or(0, Vec::len);
                if u64::try_from(ids).ok() != Some(n) {
                    log.error("append_bad_response", 1);
                }
                seq += n;
            }
            Err(e) => {
                // Stop appending: what was acknowledged is what the reader must get.
                log.error(format!("append_{}", e.kind()), 1);
                break;
            }
        }
    }
    log.appended = seq;
    let tools_path = format!("/v2/sessions/{id}/tools");
    for batch in 0..plan.tool_batches {
        tokio::time::sleep(plan.think_time()).await;
        let calls: Vec<Value> = (0..plan.tool_calls)
            .map(|c| json!({"id": format!("c{c}"), "tool": plan.tool, "input": {"text": format!("{id}/{batch}/{c}")}}))
            .collect();
        log.requests += 1;
        match ctx
            .client
            .post_json(&tools_path, &json!({ "calls": calls }), StatusCode::OK)
            .await
        {
            Ok(reply) => {
                log.sample(Metric::ToolBatch, Instant::now(), reply.first_byte);
                check_tool_answer(&reply.json, plan.tool_calls, &mut log);
            }
            Err(e) => {
                // 404/501: no tools endpoint on the target; 400: e.g. an unknown tool name.
                log.error(format!("tools_{}", e.kind()), 1);
                break;
            }
        }
    }
    tokio::time::sleep(plan.think_time()).await;
    let status = if log.is_clean() {
        "succeeded"
    } else {
        "failed"
    };
    log.requests += 1;
    let completed = match ctx
        .client
        .post_json(
            &format!("/v2/sessions/{id}/complete"),
            &json!({"status": status, "final_response": {"events": seq}}),
            StatusCode::OK,
        )
        .await
    {
        Ok(reply) => {
            log.sample(Metric::Complete, Instant::now(), reply.first_byte);
            true
        }
        Err(e) => {
            log.error(format!("complete_{}", e.kind()), 1);
            false
        }
    };
    let _ = done_tx.send(AgentDone {
        appended: seq,
        completed,
    });

    // 4. the reader's verdict
    if let Some(mut reader) = reader {
        match (&mut reader.0).await {
            Ok(reader_log) => log.absorb(reader_log),
            Err(_) => log.error("internal_panic", 1),
        }
    }
    if log.is_clean() {
        log.sample(Metric::Session, Instant::now(), began.elapsed());
    }
    log
}

/// A task that is aborted when its handle is dropped: a session cut by the run's deadline
/// takes its stream reader with it.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Opens the session's stream and waits for its `retry:` frame; `None` (error counted) if
/// that fails.
async fn open(ctx: &Context, log: &mut SessionLog, id: &str, token: &str) -> Option<SseReader> {
    let started = Instant::now();
    log.requests += 1;
    let mut stream = match ctx
        .client
        .open_stream(&format!("/v2/sessions/{id}/stream?token={token}"))
        .await
    {
        Ok(stream) => stream,
        Err(e) => {
            log.error(format!("stream_{}", e.kind()), 1);
            return None;
        }
    };
    let first = tokio::time::timeout(ctx.client.timeout(), stream.next()).await;
    match first {
        Ok(Ok(Some(Item::Retry(_)))) => {
            log.sample(Metric::SseConnect, Instant::now(), started.elapsed());
            Some(stream)
        }
        Ok(Ok(_)) => {
            log.error("stream_bad_response", 1);
            None
        }
        Ok(Err(e)) => {
            log.error(format!("stream_{}", e.kind()), 1);
            None
        }
        Err(_) => {
            log.error("stream_timeout", 1);
            None
        }
    }
}

/// Checks a tool batch answer: every call reported, every call succeeded.
fn check_tool_answer(answer: &Value, expected: u64, log: &mut SessionLog) {
    let Some(calls) = answer["calls"].as_array() else {
        log.error("tools_bad_response", 1);
        return;
    };
    if u64::try_from(calls.len()).ok() != Some(expected) {
        log.error("tools_bad_response", 1);
    }
    for call in calls {
        match call["status"].as_str() {
            Some("succeeded") => {}
            Some(status) => log.error(format!("tool_call_{status}"), 1),
            None => log.error("tools_bad_response", 1),
        }
    }
}

/// The data of an appended event.
#[derive(Deserialize)]
struct Stamp {
    seq: u64,
    sent_us: u64,
}

/// Follows a stream to its `complete` event, measuring delivery and checking that every
/// acknowledged event arrived exactly once, in order.
async fn follow(
    mut stream: SseReader,
    epoch: Instant,
    timeout: Duration,
    mut done: oneshot::Receiver<AgentDone>,
) -> SessionLog {
    let mut log = SessionLog::new(epoch);
    let mut order = Order::default();
    let mut agent: Option<AgentDone> = None;
    // No deadline while the agent works (the run's deadline bounds it); once it is done,
    // the rest must arrive within one request timeout.
    let mut deadline: Option<Instant> = None;
    loop {
        tokio::select! {
            item = stream.next() => match item {
                Ok(Some(Item::Event(event))) => {
                    let received = micros_since(epoch);
                    match event.event.as_deref() {
                        Some(EVENT_KIND) => {
                            let Ok(stamp) = serde_json::from_str::<Stamp>(&event.data) else {
                                log.error("event_bad_data", 1);
                                continue;
                            };
                            log.sample(
                                Metric::Delivery,
                                Instant::now(),
                                Duration::from_micros(received.saturating_sub(stamp.sent_us)),
                            );
                            if let Some(kind) = order.receive(stamp.seq) {
                                log.error(kind, 1);
                            }
                        }
                        Some(GAP_KIND) => order.gap(),
                        Some("complete") => break,
                        _ => {} // tool progress events and anything else a gateway adds
                    }
                }
                Ok(Some(_)) => {} // heartbeats
                Ok(None) => {
                    log.error("stream_ended_early", 1);
                    break;
                }
                Err(e) => {
                    log.error(format!("stream_{}", e.kind()), 1);
                    break;
                }
            },
            done_msg = &mut done, if agent.is_none() => {
                agent = Some(done_msg.unwrap_or(AgentDone { appended: 0, completed: false }));
                deadline = Some(Instant::now() + timeout);
            }
            () = sleep_until_some(deadline) => {
                log.error(if agent.is_some_and(|a| a.completed) {
                    "stream_complete_timeout"
                } else {
                    "stream_incomplete"
                }, 1);
                break;
            }
        }
    }
    drop(stream);
    // The complete event can arrive before the agent has read complete's answer.
    let agent = match agent {
        Some(agent) => Some(agent),
        None => tokio::time::timeout(timeout, done)
            .await
            .ok()
            .and_then(Result::ok),
    };
    let Some(agent) = agent else {
        log.error("stream_incomplete", 1);
        return log;
    };
    let received = order.received_below(agent.appended);
    let told = order.told_below(agent.appended);
    log.delivered = received;
    log.gaps = order.gaps;
    log.told_missing = told;
    log.error(
        "event_lost",
        agent.appended.saturating_sub(received).saturating_sub(told),
    );
    log
}

/// The exactly-once, in-order check of one stream, by sequence number, and the events the
/// gateway told it were trimmed.
#[derive(Debug, Default)]
struct Order {
    seen: HashSet<u64>,
    highest: Option<u64>,
    /// `gap` events received.
    gaps: u64,
    /// A gap was told and no event has followed it yet.
    gap_open: bool,
    /// Events inside told gaps: between the last received before a gap and the first after.
    told: u64,
}

impl Order {
    /// Takes in a `gap` event: what is missing up to the next event received was told.
    fn gap(&mut self) {
        self.gaps += 1;
        self.gap_open = true;
    }

    /// The first sequence number not received yet in order.
    fn next_expected(&self) -> u64 {
        self.highest.map_or(0, |h| h + 1)
    }

    /// Takes in event `seq`; the error kind if it is a duplicate or arrives after a later one.
    fn receive(&mut self, seq: u64) -> Option<&'static str> {
        if std::mem::take(&mut self.gap_open) {
            self.told += seq.saturating_sub(self.next_expected());
        }
        let error = if !self.seen.insert(seq) {
            Some("event_duplicated")
        } else if self.highest.is_some_and(|h| seq < h) {
            Some("event_out_of_order")
        } else {
            None
        };
        self.highest = self.highest.max(Some(seq));
        error
    }

    /// Distinct events received among `0..appended` (a failed append's events may still
    /// arrive; they are not counted).
    fn received_below(&self, appended: u64) -> u64 {
        let n = self.seen.iter().filter(|s| **s < appended).count();
        u64::try_from(n).unwrap_or(u64::MAX)
    }

    /// Events among `0..appended` inside told gaps (a gap still open at the end covers
    /// everything after the last event received).
    fn told_below(&self, appended: u64) -> u64 {
        let open = if self.gap_open {
            appended.saturating_sub(self.next_expected())
        } else {
            0
        };
        (self.told + open).min(appended)
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn micros_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_counts_duplicates_reorders_and_losses() {
        let mut order = Order::default();
        let kinds: Vec<_> = [0, 1, 3, 2, 3, 5]
            .into_iter()
            .map(|s| order.receive(s))
            .collect();
        assert_eq!(
            kinds,
            [
                None,
                None,
                None,
                Some("event_out_of_order"),
                Some("event_duplicated"),
                None
            ]
        );
        // 0..7 appended: 4 and 6 never came.
        assert_eq!(order.received_below(7), 5);
        // Only 0..3 acknowledged: 3 and 5 came from a failed append and do not count.
        assert_eq!(order.received_below(3), 3);
        assert_eq!(order.told_below(7), 0, "nothing was told");
    }

    #[test]
    fn events_inside_a_told_gap_are_told_not_lost() {
        let mut order = Order::default();
        for seq in [0, 1] {
            assert_eq!(order.receive(seq), None);
        }
        order.gap(); // 2..=5 trimmed
        for seq in [6, 7, 9] {
            assert_eq!(order.receive(seq), None);
        }
        // 0..12 appended: 2..=5 told; 8 neither received nor told (lost); a gap at the end
        // covers 10 and 11.
        order.gap();
        assert_eq!((order.gaps, order.received_below(12)), (2, 5));
        assert_eq!(order.told_below(12), 6);
    }
}
