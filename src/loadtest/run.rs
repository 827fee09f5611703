//! The session driver: starts sessions on the arrival schedule, within the concurrency
//! limit and the run's deadline, and plays each one as its agent and as its viewer.
//!
//! One session:
//!
//! 1. `POST /v2/sessions` (init; time to first byte is measured);
//! 2. `GET` its stream (`viewers` of them) and wait for the `retry:` frame, which the
//!    gateway sends once the stream is registered, so every later append is a live delivery;
//! 3. a reader task per viewer follows its stream while the agent appends `events` in
//!    batches of `batch_size`, runs `tool_batches` tool batches, and completes — pausing
//!    `think_time_ms` before each call;
//! 4. each reader checks it got every acknowledged event exactly once and in order, then the
//!    `complete` event. A `gap` event (the gateway telling the reader that events were
//!    trimmed by `store.events_maxlen` before it got them) is not a loss: the events between
//!    the last one received before it and the first one after it count as missed and told,
//!    apart from `event_lost` (acknowledged, never delivered, never told).
//!
//! With `resume` (the fault suite, `bench/faults.sh`) the session rides out failures the
//! way its real clients would: a viewer whose stream ends or fails reconnects like a
//! browser's `EventSource` (after the `retry:` delay, with `Last-Event-ID`), the agent goes
//! on after a failed append and retries a failed complete; what was acknowledged is still
//! what every viewer must get, exactly once. Each viewer's longest wait between two events
//! (reconnects included) measures what a fault cost it.
//!
//! Delivery latency needs no clock sync: agent and reader share the process, so each
//! event's data carries its send time in microseconds since the run's `Instant` epoch and
//! the reader subtracts it from its own receive time.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;

use agentgate_middleware::sse::Item;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Duration, Instant};

use super::arrival::Schedule;
use super::client::{CallError, Client, Reply, SseReader};
use super::record::{Metric, Recorder, SessionLog};
use super::scenario::{Scenario, SessionPlan};
use crate::api::stream::GAP_KIND;

/// Event kind of the events the load generator appends.
pub const EVENT_KIND: &str = "loadtest";

/// How often the arrival loop looks at the schedule while a session is not yet due.
const ARRIVAL_TICK: Duration = Duration::from_millis(2);

/// A viewer's reconnect delay when it has not connected yet (so knows no `retry:`).
const RECONNECT_DELAY: Duration = Duration::from_millis(1000);

/// The pause between retries of a failed call (`session.resume`, `session.retry_appends`).
const RETRY_PAUSE: Duration = Duration::from_millis(250);

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

/// What the agent tells its viewers when it is done.
#[derive(Debug, Clone, Default)]
struct AgentDone {
    /// Sequence numbers the gateway acknowledged, as ascending ranges.
    acked: Vec<Range<u64>>,
    /// Whether complete was acknowledged (so a `complete` event must arrive).
    completed: bool,
}

/// The agent's news for its viewers: `None` until it is done.
type DoneTx = watch::Sender<Option<Arc<AgentDone>>>;
type DoneRx = watch::Receiver<Option<Arc<AgentDone>>>;

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

    // 2. the streams, registered before the first append
    let (done_tx, done_rx): (DoneTx, DoneRx) = watch::channel(None);
    let mut readers = Vec::new();
    for v in 0..plan.viewers {
        let viewer = Viewer {
            client: ctx.client.clone(),
            path: format!("/v2/sessions/{id}/stream?token={token}"),
            epoch: ctx.epoch,
            resume: plan.resume,
            stall: (v < plan.stalled_viewers).then(|| plan.stall()),
            offline: plan.stall_offline,
        };
        let stream = match viewer.connect(None).await {
            Ok((stream, took, retry)) => {
                log.sample(Metric::SseConnect, Instant::now(), took);
                Some((stream, retry))
            }
            Err(kind) => {
                log.error(format!("stream_{kind}"), 1);
                None
            }
        };
        log.requests += 1;
        // Without `resume`, a viewer that could not connect is a failed session already;
        // with it, the viewer connects again, from the start of the log.
        if stream.is_some() || plan.resume {
            let done = done_rx.clone();
            readers.push(AbortOnDrop(tokio::spawn(viewer.follow(stream, done))));
        }
    }

    // 3. the agent
    let mut acked: Vec<Range<u64>> = Vec::new();
    let mut seq = 0;
    while seq < plan.events {
        let n = plan.batch_size.min(plan.events - seq);
        tokio::time::sleep(plan.think_time()).await;
        let sent_us = micros_since(ctx.epoch);
        let events: Vec<Value> = (seq..seq + n)
            .map(|s| json!({"kind": EVENT_KIND, "data": {"seq": s, "sent_us": sent_us, "pad": ctx.padding}}))
            .collect();
        log.written += n;
        // With `retry_appends`, every attempt of this batch carries the same key and body.
        let key = plan.retry_appends.then(|| format!("append-{seq}"));
        let body = json!({ "events": events });
        match call(ctx, &mut log, "append", &events_path, &body, key.as_deref()).await {
            Ok(reply) => {
                log.sample(Metric::Append, Instant::now(), reply.first_byte);
                let ids = reply.json["ids"].as_array().map_or(0, Vec::len);
                if u64::try_from(ids).ok() != Some(n) {
                    log.error("append_bad_response", 1);
                }
                match acked.last_mut() {
                    Some(last) if last.end == seq => last.end = seq + n,
                    _ => acked.push(seq..seq + n),
                }
            }
            Err(()) => {
                // What was acknowledged is what the readers must get; this batch may or may
                // not arrive. Without `resume`, stop appending.
                if !plan.resume {
                    break;
                }
            }
        }
        seq += n;
    }
    log.appended = acked.iter().map(|r| r.end - r.start).sum();
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
    let completed = complete(ctx, &mut log, id, seq).await;
    let _ = done_tx.send(Some(Arc::new(AgentDone { acked, completed })));

    // 4. the viewers' verdicts
    for mut reader in readers {
        match (&mut reader.0).await {
            Ok(reader_log) => log.absorb(reader_log),
            Err(_) => log.error("internal_panic", 1),
        }
    }
    // 5. with `resume`, what the log kept: one more reader from the start, after everything.
    if plan.resume {
        let replay = Viewer {
            client: ctx.client.clone(),
            path: format!("/v2/sessions/{id}/stream?token={token}"),
            epoch: ctx.epoch,
            resume: true,
            stall: None,
            offline: false,
        };
        let done = done_tx.subscribe();
        log.absorb_replay(replay.follow(None, done).await);
    }
    if log.is_clean() {
        log.sample(Metric::Session, Instant::now(), began.elapsed());
    }
    log
}

/// Completes the session; with `resume`, retries a failed call until it is acknowledged or
/// the run's deadline cuts the session (every attempt carries the same `Idempotency-Key`, so
/// a retry of an attempt that was applied gets its answer; a `409` on a retry, from a gateway
/// without idempotency keys, means the same). Whether it completed.
async fn complete(ctx: &Context, log: &mut SessionLog, id: &str, events: u64) -> bool {
    let status = if log.is_clean() {
        "succeeded"
    } else {
        "failed"
    };
    let body = json!({"status": status, "final_response": {"events": events}});
    let path = format!("/v2/sessions/{id}/complete");
    let key = ctx.plan.resume.then_some("complete");
    match call(ctx, log, "complete", &path, &body, key).await {
        Ok(reply) => {
            log.sample(Metric::Complete, Instant::now(), reply.first_byte);
            true
        }
        Err(()) => false,
    }
}

/// One agent call (`what`: `append`, `complete`), its failures counted as `<what>_<kind>`.
/// With an idempotency `key`, a failure the gateway may get over (no answer, a timeout, a
/// `5xx`) is retried with the same key and body until acknowledged or the run's deadline
/// cuts the session: applied once, whatever happened to the earlier attempts' answers. A
/// `409` after a failed attempt means that attempt was applied (a gateway without
/// idempotency keys answers a second complete so).
async fn call(
    ctx: &Context,
    log: &mut SessionLog,
    what: &str,
    path: &str,
    body: &Value,
    key: Option<&str>,
) -> Result<Reply, ()> {
    let mut retried = false;
    loop {
        log.requests += 1;
        let attempt = match key {
            Some(key) => {
                ctx.client
                    .post_json_once(path, body, StatusCode::OK, key)
                    .await
            }
            None => ctx.client.post_json(path, body, StatusCode::OK).await,
        };
        let error = match attempt {
            Ok(reply) => return Ok(reply),
            Err(CallError::Status(StatusCode::CONFLICT)) if retried && what == "complete" => {
                return Ok(Reply {
                    first_byte: Duration::ZERO,
                    json: Value::Null,
                });
            }
            Err(e) => e,
        };
        log.error(format!("{what}_{}", error.kind()), 1);
        let transient = match &error {
            CallError::Timeout | CallError::Transport(_) => true,
            CallError::Status(status) => status.is_server_error(),
            CallError::BadResponse(_) => false,
        };
        if key.is_none() || !transient {
            return Err(());
        }
        retried = true;
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// A task that is aborted when its handle is dropped: a session cut by the run's deadline
/// takes its stream readers with it.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
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

/// One stream reader of a session.
struct Viewer {
    client: Client,
    /// The stream's path and query (token included).
    path: String,
    epoch: Instant,
    /// Reconnect after losing the stream (`session.resume`).
    resume: bool,
    /// Stop reading this long after the first event (`session.stalled_viewers`).
    stall: Option<Duration>,
    /// Close the connection for the stall (`session.stall_offline`).
    offline: bool,
}

/// What the read loop does next.
enum Step {
    Item(Result<Option<Item>, CallError>),
    AgentDone(Arc<AgentDone>),
    Deadline,
}

impl Viewer {
    /// Opens the stream after `cursor` and waits for its `retry:` frame (the stream is
    /// registered then). The stream, how long that took and its reconnect delay, or the
    /// error kind.
    async fn connect(
        &self,
        cursor: Option<&str>,
    ) -> Result<(SseReader, Duration, Duration), String> {
        let started = Instant::now();
        let timeout = self.client.timeout();
        let mut stream = self
            .client
            .open_stream(&self.path, cursor)
            .await
            .map_err(|e| e.kind())?;
        match tokio::time::timeout(timeout, stream.next()).await {
            Ok(Ok(Some(Item::Retry(ms)))) => {
                Ok((stream, started.elapsed(), Duration::from_millis(ms)))
            }
            Ok(Ok(_)) => Err("bad_response".to_owned()),
            Ok(Err(e)) => Err(e.kind()),
            Err(_) => Err("timeout".to_owned()),
        }
    }

    /// Follows the stream to its `complete` event — reconnecting after a loss with `resume`
    /// — measuring delivery and checking that every acknowledged event arrived exactly once,
    /// in order.
    async fn follow(
        self,
        connected: Option<(SseReader, Duration)>,
        mut done: DoneRx,
    ) -> SessionLog {
        let mut log = SessionLog::new(self.epoch);
        let mut order = Order::default();
        let mut agent: Option<Arc<AgentDone>> = None;
        // No deadline while the agent works (the run's deadline bounds it); once it is done,
        // the rest must arrive within one request timeout.
        let mut deadline: Option<Instant> = None;
        let timeout = self.client.timeout();
        let mut stall = self.stall;
        // The reconnect delay (the stream's `retry:`); a viewer that starts without a stream
        // connects at once.
        let (mut stream, mut wait) = match connected {
            Some((stream, retry)) => (Some(stream), retry),
            None => (None, Duration::ZERO),
        };
        let mut cursor: Option<String> = None;
        let mut last_event: Option<Instant> = None;
        loop {
            if agent.is_none()
                && let Some(news) = done.borrow_and_update().clone()
            {
                agent = Some(news);
                deadline = Some(Instant::now() + timeout);
            }
            let Some(reader) = stream.as_mut() else {
                // Reconnect as EventSource does: after the retry delay, from the cursor.
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    log.error("stream_incomplete", 1);
                    break;
                }
                tokio::time::sleep(wait).await;
                if wait.is_zero() {
                    wait = RECONNECT_DELAY; // the next attempt, if this one fails
                }
                log.requests += 1;
                match self.connect(cursor.as_deref()).await {
                    Ok((reader, _, retry)) => {
                        stream = Some(reader);
                        wait = retry;
                        log.reconnects += 1;
                    }
                    Err(_) => log.reconnect_failures += 1,
                }
                continue;
            };
            let step = tokio::select! {
                item = reader.next() => Step::Item(item),
                news = agent_done(&mut done), if agent.is_none() => Step::AgentDone(news),
                () = sleep_until_some(deadline) => Step::Deadline,
            };
            let event = match step {
                Step::Item(Ok(Some(Item::Event(event)))) => event,
                Step::Item(Ok(Some(Item::Retry(ms)))) => {
                    wait = Duration::from_millis(ms);
                    continue;
                }
                Step::Item(Ok(Some(_))) => continue, // heartbeats
                Step::Item(lost) => {
                    if self.resume {
                        stream = None;
                        continue;
                    }
                    match lost {
                        Err(e) => log.error(format!("stream_{}", e.kind()), 1),
                        Ok(_) => log.error("stream_ended_early", 1),
                    }
                    break;
                }
                Step::AgentDone(news) => {
                    agent = Some(news);
                    deadline = Some(Instant::now() + timeout);
                    continue;
                }
                Step::Deadline => {
                    log.error(
                        if agent.as_ref().is_some_and(|a| a.completed) {
                            "stream_complete_timeout"
                        } else {
                            "stream_incomplete"
                        },
                        1,
                    );
                    break;
                }
            };
            cursor = reader.last_event_id().map(str::to_owned);
            match event.event.as_deref() {
                Some(EVENT_KIND) => {
                    let Ok(stamp) = serde_json::from_str::<Stamp>(&event.data) else {
                        log.error("event_bad_data", 1);
                        continue;
                    };
                    if let Some(kind) = order.receive(stamp.seq) {
                        log.error(kind, 1);
                    }
                    if self.stall.is_some() {
                        // A stalled viewer's figures are its stall; only its check counts.
                        if let Some(pause) = stall.take() {
                            if self.offline {
                                stream = None; // asleep: back with Last-Event-ID after
                            }
                            tokio::time::sleep(pause).await;
                        }
                        continue;
                    }
                    let now = Instant::now();
                    let received = micros_since(self.epoch);
                    log.sample(
                        Metric::Delivery,
                        now,
                        Duration::from_micros(received.saturating_sub(stamp.sent_us)),
                    );
                    if let Some(previous) = last_event {
                        log.longest_wait = log.longest_wait.max(now - previous);
                    }
                    last_event = Some(now);
                }
                Some(GAP_KIND) => order.gap(),
                Some("complete") => break,
                _ => {} // tool progress events and anything else a gateway adds
            }
        }
        drop(stream);
        // The complete event can arrive before the agent has read complete's answer.
        let agent = match agent {
            Some(agent) => Some(agent),
            None => tokio::time::timeout(timeout, agent_done(&mut done))
                .await
                .ok(),
        };
        let Some(agent) = agent else {
            log.error("stream_incomplete", 1);
            return log;
        };
        let acked: u64 = agent.acked.iter().map(|r| r.end - r.start).sum();
        let received = order.received_in(&agent.acked);
        let told = order.told_in(&agent.acked);
        log.delivered = received;
        log.gaps = order.gaps;
        log.told_missing = told;
        log.error(
            "event_lost",
            acked.saturating_sub(received).saturating_sub(told),
        );
        log
    }
}

/// Waits for the agent's news; an agent that ended without any (its task cut) acknowledged
/// nothing.
async fn agent_done(done: &mut DoneRx) -> Arc<AgentDone> {
    loop {
        if let Some(news) = done.borrow_and_update().clone() {
            return news;
        }
        if done.changed().await.is_err() {
            return Arc::default();
        }
    }
}

/// The exactly-once, in-order check of one stream, by sequence number, and the events the
/// gateway told it were trimmed.
#[derive(Debug, Default)]
struct Order {
    seen: HashSet<u64>,
    highest: Option<u64>,
    /// `gap` events received.
    gaps: u64,
    /// A gap was told and no event has followed it yet: it starts here.
    open_gap: Option<u64>,
    /// Told gaps: from the first sequence number not received before each gap to the first
    /// received after it.
    told: Vec<Range<u64>>,
}

impl Order {
    /// Takes in a `gap` event: what is missing up to the next event received was told.
    fn gap(&mut self) {
        self.gaps += 1;
        self.open_gap.get_or_insert(self.next_expected());
    }

    /// The first sequence number not received yet in order.
    fn next_expected(&self) -> u64 {
        self.highest.map_or(0, |h| h + 1)
    }

    /// Takes in event `seq`; the error kind if it is a duplicate or arrives after a later one.
    fn receive(&mut self, seq: u64) -> Option<&'static str> {
        if let Some(from) = self.open_gap.take() {
            self.told.push(from..seq.max(from));
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

    /// Distinct events received among `acked` (a failed append's events may still arrive;
    /// they are not counted).
    fn received_in(&self, acked: &[Range<u64>]) -> u64 {
        let n = self
            .seen
            .iter()
            .filter(|s| acked.iter().any(|r| r.contains(s)))
            .count();
        u64::try_from(n).unwrap_or(u64::MAX)
    }

    /// Events among `acked` inside told gaps (a gap still open at the end covers everything
    /// after the last event received).
    fn told_in(&self, acked: &[Range<u64>]) -> u64 {
        let open = self.open_gap.map(|from| from..u64::MAX);
        self.told
            .iter()
            .chain(open.as_ref())
            .flat_map(|gap| {
                acked
                    .iter()
                    .map(move |r| r.end.min(gap.end).saturating_sub(r.start.max(gap.start)))
            })
            .sum()
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
// `&[0..7]`: the acknowledged sequence numbers, as the one range they form.
#[allow(clippy::single_range_in_vec_init)]
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
        assert_eq!(order.received_in(&[0..7]), 5);
        // Only 0..3 acknowledged: 3 and 5 came from a failed append and do not count.
        assert_eq!(order.received_in(&[0..3]), 3);
        // 0..2 and 4..7 acknowledged (the append of 2..4 failed): 0, 1 and 5 received.
        assert_eq!(order.received_in(&[0..2, 4..7]), 3);
        assert_eq!(order.told_in(&[0..7]), 0, "nothing was told");
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
        assert_eq!((order.gaps, order.received_in(&[0..12])), (2, 5));
        assert_eq!(order.told_in(&[0..12]), 6);
        // Only what was acknowledged counts as told: 3 and 4, and 10.
        assert_eq!(order.told_in(&[0..2, 3..5, 6..11]), 3);
    }
}
