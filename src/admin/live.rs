//! `GET /admin/live`: the gateway's vital signs as Server-Sent Events, one JSON snapshot per
//! second, for the status page (`GET /`) and anyone with `curl -N`.
//!
//! One task samples [`Metrics::live`] every [`INTERVAL`] and publishes the snapshot
//! on a `watch` channel; every connected stream forwards the latest one, so the cost does not
//! grow with viewers and a slow viewer skips snapshots instead of queueing them. Rates are
//! deltas of running totals over the measured interval; `p50_ms`/`p99_ms` are percentiles of
//! the agent API's handler latencies (time to response head) recorded in that interval
//! (hdrhistogram), `null` when no request was answered. Latencies are recorded only while
//! someone follows the feed, so the request path does not pay for an unwatched page.
//!
//! A snapshot:
//!
//! ```json
//! {"time_ms": 1767225600000, "interval_s": 1.0, "sessions_active": 3, "sse_streams": 5,
//!  "sse_tails": 2, "requests_per_s": 41.0, "requests_total": 1203, "p50_ms": 0.4,
//!  "p99_ms": 2.1, "store_ops_per_s": 80.0, "store_round_trips_per_s": 41.0,
//!  "sheds_total": 0, "sheds_per_s": 0.0, "rate_limited_total": 2, "rate_limited_per_s": 0.0,
//!  "rss_bytes": 31457280}
//! ```
//!
//! Streams end at shutdown (the task stops and every stream sees it), so they never keep the
//! process serving.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use agentgate_middleware::sse::{self, Frame};
use bytes::Bytes;
use http::{HeaderValue, Response, header};
use http_body_util::{BodyExt, StreamBody};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::api::Body;
use crate::metrics::{LatencyWindow, LiveFigures, Metrics};
use crate::store::now_ms;

/// How often a snapshot is taken.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// The latest snapshot, as an encoded SSE frame (empty until the first one).
pub type Latest = watch::Receiver<Bytes>;

/// Starts the sampling task on the current runtime; it stops at `shutdown`.
pub fn spawn(metrics: Arc<Metrics>, shutdown: CancellationToken) -> Latest {
    let (tx, rx) = watch::channel(Bytes::new());
    tokio::spawn(run(metrics, tx, shutdown));
    rx
}

/// Takes a snapshot every [`INTERVAL`] until `shutdown` (a few atomic loads and a
/// histogram reset: not worth skipping when nobody watches). Handler latencies are recorded
/// only while a stream is connected.
async fn run(metrics: Arc<Metrics>, tx: watch::Sender<Bytes>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut previous = (metrics.live(), Instant::now());
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return, // drops `tx`: every stream ends
        }
        // The admin listener holds one receiver; any other is a connected stream.
        metrics.record_latencies(tx.receiver_count() > 1);
        let now = (metrics.live(), Instant::now());
        let latencies = metrics.take_latencies();
        let seconds = now.1.duration_since(previous.1).as_secs_f64();
        let value = snapshot(&previous.0, &now.0, seconds, latencies);
        tx.send_replace(Frame::message(&value.to_string()).encode());
        previous = now;
    }
}

/// The JSON snapshot of the interval from `before` to `after`, `seconds` long.
pub fn snapshot(
    before: &LiveFigures,
    after: &LiveFigures,
    seconds: f64,
    latencies: Option<LatencyWindow>,
) -> Value {
    #[allow(clippy::cast_precision_loss)] // per-second rates of counters
    let rate = |from: u64, to: u64| {
        if seconds > 0.0 {
            to.saturating_sub(from) as f64 / seconds
        } else {
            0.0
        }
    };
    json!({
        "time_ms": now_ms(),
        "interval_s": seconds,
        "sessions_active": after.sessions,
        "sse_streams": after.client_streams,
        "sse_tails": after.tails,
        "requests_per_s": rate(before.requests, after.requests),
        "requests_total": after.requests,
        "p50_ms": latencies.map(|l| l.p50_ms),
        "p99_ms": latencies.map(|l| l.p99_ms),
        "store_ops_per_s": rate(before.store_commands, after.store_commands),
        "store_round_trips_per_s": rate(before.store_round_trips, after.store_round_trips),
        "sheds_total": after.shed,
        "sheds_per_s": rate(before.shed, after.shed),
        "rate_limited_total": after.rate_limited,
        "rate_limited_per_s": rate(before.rate_limited, after.rate_limited),
        "rss_bytes": after.resident_bytes,
    })
}

/// The SSE response following `latest` until the feed stops or `shutdown`.
pub fn stream(latest: Latest, shutdown: CancellationToken) -> Response<Body> {
    // Reconnect quickly after a restart; the first frame says so.
    let retry = Frame::retry(INTERVAL.as_millis().try_into().unwrap_or(1000)).encode();
    let start = futures_util::stream::iter([retry]);
    let frames = futures_util::stream::unfold(
        (latest, shutdown, true),
        |(mut latest, shutdown, first)| async move {
            let next = async {
                // The current snapshot first (if there is one yet), then each new one.
                if !first || latest.borrow_and_update().is_empty() {
                    latest.changed().await.ok()?;
                }
                Some(latest.borrow_and_update().clone())
            };
            let frame = tokio::select! {
                frame = next => frame?,
                () = shutdown.cancelled() => return None,
            };
            Some((frame, (latest, shutdown, false)))
        },
    );
    let body = StreamBody::new(futures_util::StreamExt::map(
        futures_util::StreamExt::chain(start, frames),
        |bytes| Ok::<_, Infallible>(http_body::Frame::data(bytes)),
    ));
    let mut response = Response::new(body.boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(sse::CONTENT_TYPE),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_deltas_per_second() {
        let before = LiveFigures {
            requests: 10,
            store_commands: 100,
            shed: 1,
            ..LiveFigures::default()
        };
        let after = LiveFigures {
            requests: 30,
            store_commands: 160,
            shed: 1,
            sessions: 4,
            ..LiveFigures::default()
        };
        let value = snapshot(&before, &after, 2.0, None);
        assert_eq!(value["requests_per_s"], 10.0);
        assert_eq!(value["store_ops_per_s"], 30.0);
        assert_eq!(value["sheds_per_s"], 0.0);
        assert_eq!(value["sessions_active"], 4);
        assert!(value["p99_ms"].is_null());
    }
}
