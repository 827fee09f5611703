//! `GET /v2/sessions/{id}/stream`: the session's events over Server-Sent Events.
//!
//! Auth: the stream token init returned, as `?token=` (works in `EventSource`) or
//! `Authorization: Bearer`. Resume: `Last-Event-ID` header (sent by browsers on reconnect)
//! or `?last_event_id=`; the header wins when both are present.
//!
//! Exactness: the stream registers its [`Watch`](crate::store::Watch) before its first read,
//! then alternates "read everything after my cursor" and "wait for a change". An append
//! after any read wakes the watch, so the handoff from replay to live has no gap; every read
//! starts strictly after the last id sent, so there is no duplicate.
//!
//! Gaps: the log is capped (`store.events_maxlen`). When the store reports that events after
//! the cursor were trimmed before this reader got them — a resume from an old
//! `Last-Event-ID`, a reader that fell behind, a fan-out viewer detached for falling behind
//! and resuming through its own call — the stream sends one `gap` event naming the missing
//! range ([`gap_frame`]), counts it (`agentgate_stream_gaps_total`) and goes on from the
//! oldest event kept: exact, or explicitly told.
//!
//! Back-pressure: frames go through a small bounded channel and the store is read in
//! batches of `replay_batch` only when there is room, so a slow client costs a bounded
//! amount of memory however far behind it is.
//!
//! The stream ends after the `complete` event, when the client goes away, or at shutdown.
//! Idle streams get a heartbeat comment every `heartbeat`; if the store is unavailable the
//! stream stays open (heartbeats go on) and resumes when it is back.

use std::sync::Arc;
use std::time::Duration;

use agentgate_middleware::KeyExtractor;
use agentgate_middleware::existence_cache::Exists;
use agentgate_middleware::sse::{self, Frame};
use bytes::Bytes;
use http::{HeaderValue, Method, Response, header};
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use super::body::{Body, ChannelBody, full};
use super::identity::RequestSession;
use super::{ApiError, ApiState, bearer, query_param};
use crate::store::{COMPLETE_KIND, Event, EventId, Gap, Replay, SessionId};

/// The SSE event kind of a [`Gap`]; agents may not append it.
pub const GAP_KIND: &str = "gap";

/// Frames buffered per stream between the reader task and the connection.
const CHANNEL_FRAMES: usize = 16;

/// Delay before retrying a read that failed because the store is unavailable.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// Longest a new stream waits for the store to subscribe to its session before its first
/// read (Redis down: it reads, fails and retries as usual; heard later, it reads again).
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(2);

/// Handles a stream request.
pub async fn handle(
    state: &Arc<ApiState>,
    id: SessionId,
    req: &http::request::Parts,
) -> Result<Response<Body>, ApiError> {
    let query = req.uri.query();
    // The session layer at the top of the stack verified the token already, if it ran.
    let vouched = req
        .extensions
        .get::<RequestSession>()
        .is_some_and(|session| session.viewer && session.id == id);
    if !vouched {
        let token = query_param(query, "token");
        let token = token.as_deref().or_else(|| bearer(&req.headers));
        state.tokens.verify(&id, token)?;
    }

    let cursor = match req.headers.get("last-event-id") {
        Some(value) => Some(value.to_str().unwrap_or("\u{fffd}").to_owned()),
        None => query_param(query, "last_event_id"),
    };
    let cursor = cursor
        .filter(|c| !c.is_empty())
        .map(|c| c.parse::<EventId>())
        .transpose()
        .map_err(|e| ApiError::invalid("last_event_id", e))?;

    // The existence cache (when on) has already vouched for the session.
    if req.extensions.get::<Exists>().is_none() && !state.store.exists(&id).await? {
        return Err(ApiError::session_not_found());
    }

    let body = if req.method == Method::HEAD {
        full(Bytes::new()) // headers only: no stream to feed
    } else {
        let (tx, rx) = mpsc::channel(CHANNEL_FRAMES);
        tokio::spawn(pump(Arc::clone(state), id, cursor, tx));
        ChannelBody(rx).boxed_unsync()
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(sse::CONTENT_TYPE),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tell intermediaries (nginx and the like) not to buffer.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The session a stream connect with a valid token reads, as the
/// [session layer](super::identity) established it: the key of the existence cache and
/// of the SSE fan-out (a joiner's token was checked there, since the handler never sees
/// it). Anything else — other routes, bad ids, missing or wrong tokens — carries no key
/// and goes to the handler, which answers it (400, 401...): the cache never does a lookup
/// for an unauthenticated client.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamSessionKey;

impl KeyExtractor for StreamSessionKey {
    type Key = SessionId;

    /// The session of a stream connect whose token the session layer verified.
    fn extract<B>(&self, req: &http::Request<B>) -> Option<SessionId> {
        if req.method() != Method::GET {
            return None;
        }
        let session = req.extensions().get::<RequestSession>()?;
        session.viewer.then(|| session.id.clone())
    }
}

/// How the agent routes split a multiplexed `GET /v2/stream?sessions=a,b&tokens=ta,tb` into
/// one `GET /v2/sessions/{id}/stream?token=..` per session (the multiplexer in front of the
/// API, see [`crate::stack::agent`]; public for the fuzz target).
pub fn demux() -> agentgate_middleware::sse::multiplex::QueryDemux {
    agentgate_middleware::sse::multiplex::QueryDemux {
        path: "/v2/stream".to_owned(),
        streams_param: "sessions".to_owned(),
        tokens_param: "tokens".to_owned(),
        inner_path: "/v2/sessions/{}/stream".to_owned(),
        inner_token_param: "token".to_owned(),
    }
}

/// Sends one frame; false when the stream must end (client gone or shutting down).
async fn send(state: &ApiState, tx: &mpsc::Sender<Bytes>, frame: Bytes) -> bool {
    tokio::select! {
        sent = tx.send(frame) => sent.is_ok(),
        () = state.shutdown.cancelled() => false,
    }
}

/// Reads the session from `cursor` on and feeds frames to the client until it ends.
async fn pump(
    state: Arc<ApiState>,
    id: SessionId,
    mut cursor: Option<EventId>,
    tx: mpsc::Sender<Bytes>,
) {
    let _active = state.metrics.stream_opened();
    let settings = state.settings;
    // Register before the first read: anything appended from now on wakes us.
    let mut watch = state.store.watch(&id);
    if !send(&state, &tx, Frame::retry(settings.retry_ms).encode()).await {
        return;
    }
    let mut heartbeat =
        tokio::time::interval_at(Instant::now() + settings.heartbeat, settings.heartbeat);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Read only once the store hears of this session's writes (it may be subscribing), so
    // none is missed between the read and the first notification. Bounded: past it we read
    // anyway, and the confirmation, whenever it comes, wakes us to read again.
    tokio::select! {
        () = watch.subscribed() => {}
        () = tokio::time::sleep(SUBSCRIBE_WAIT) => {}
        () = tx.closed() => return,
        () = state.shutdown.cancelled() => return,
    }
    let mut first_read = true;
    // Events a notification carried that follow our cursor: delivered without a read.
    let mut notified: Option<Vec<Event>> = None;
    loop {
        let next = match notified.take() {
            Some(events) => Ok(Replay { gap: None, events }),
            None => state.store.read(&id, cursor, settings.replay_batch).await,
        };
        match next {
            Ok(Replay { gap, events }) => {
                if let Some(gap) = gap {
                    // Trimmed before we got them: say so, then go on from the oldest kept.
                    if !send(&state, &tx, gap_frame(&gap)).await {
                        return;
                    }
                    state.metrics.stream_gap_told();
                    cursor = Some(gap.last);
                }
                let full_batch = events.len() == settings.replay_batch;
                if events.is_empty()
                    && first_read
                    && cursor.is_some()
                    && completed(&state, &id).await
                {
                    // Resumed after the complete event: nothing more will come.
                    return;
                }
                first_read = false;
                for event in events {
                    let event_id = event.id.to_string();
                    let frame = Frame::event(&event.kind)
                        .id(&event_id)
                        .data(&event.data)
                        .encode();
                    if !send(&state, &tx, frame).await {
                        return;
                    }
                    cursor = Some(event.id);
                    if event.kind == COMPLETE_KIND {
                        return;
                    }
                }
                if full_batch {
                    continue; // more to replay
                }
            }
            Err(e) => {
                tracing::warn!(session = %id, error = %e, "stream read failed; retrying");
                // Keep the connection alive (heartbeats go on) until the store is back.
                tokio::select! {
                    () = tokio::time::sleep(STORE_RETRY) => {}
                    _ = heartbeat.tick() => {
                        if !send(&state, &tx, Frame::comment("heartbeat").encode()).await {
                            return;
                        }
                    }
                    () = tx.closed() => return,
                    () = state.shutdown.cancelled() => return,
                }
                continue;
            }
        }
        // Caught up: wait for an append, a heartbeat, the client leaving or shutdown.
        tokio::select! {
            () = watch.changed() => notified = watch.events_after(cursor),
            _ = heartbeat.tick() => {
                if !send(&state, &tx, Frame::comment("heartbeat").encode()).await {
                    return;
                }
                // An unfinished session can expire while we wait: end rather than idle forever.
                if matches!(state.store.exists(&id).await, Ok(false)) {
                    return;
                }
            }
            () = tx.closed() => return,
            () = state.shutdown.cancelled() => return,
        }
    }
}

/// The frame telling a reader of a [`Gap`] (README, "Gaps"): `event: gap`, `id:` the newest
/// missing id (so a reconnect resumes after the gap and is not told it again), data
/// `{"after": <the reader's cursor, null from the start>, "last": <the newest missing id>}`.
fn gap_frame(gap: &Gap) -> Bytes {
    let last = gap.last.to_string();
    let data = serde_json::json!({
        "after": gap.after.map(|after| after.to_string()),
        "last": last,
    });
    Frame::event(GAP_KIND)
        .id(&last)
        .data(&data.to_string())
        .encode()
}

/// Whether the session has completed (a failed lookup counts as not completed).
async fn completed(state: &ApiState, id: &SessionId) -> bool {
    matches!(state.store.state(id).await, Ok(Some(s)) if s.is_completed())
}
